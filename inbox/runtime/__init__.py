"""The process machinery the worker and the relay share.

- `runner`: one child's loop (LISTEN plus a poll, crash rescue, SIGTERM);
- `supervisor`: forks the children, restarts them, stops them (`runner.run(specs)`).
"""
