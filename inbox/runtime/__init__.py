"""The process machinery the worker and the relay share.

- `supervisor`: `run(specs)` forks the children, restarts them, stops them;
- `runner`: one child's loop (LISTEN plus a poll, crash rescue, SIGTERM);
- `spec`: what both need (`LoopSpec`, `Control`, the exit codes, the `Heartbeat`). The
  supervisor imports the runner and the spec, the runner only the spec: no circle.
"""
