"""The worker process (`inbox worker`): runs the handlers of due inbox events.

- `loop`: the claimer (`Worker`): claim a batch, run its handlers, record the outcomes;
- `handler_tx`: what a handler gets (`Event`, `HandlerTx`);
- `registry`: `@handler` and the loading of `INBOX_HANDLERS`;
- `store`: the worker's named queries.

Kept empty of imports: `from inbox import handler` loads `registry` through here, in every
process, the web's included.
"""
