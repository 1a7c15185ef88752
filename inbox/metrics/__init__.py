"""Metrics: `GET /metrics` on the web process, in Prometheus' text format.

Two kinds of figures, from two places:
- the deployment's state (`system.py`), read from PostgreSQL at each scrape, so that any
  web process describes the whole system and two of them give the same figures;
- the web deployment's own answers (`web.py`), counted in each gunicorn process and
  added up across them at each scrape (prometheus-client's multiprocess mode,
  `multiprocess.py`).
`endpoint.py` serves both behind INBOX_METRICS_TOKEN.
"""
