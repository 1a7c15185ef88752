"""Benchmarks beside their ceilings: `python -m bench` (see bench/README.md)."""
