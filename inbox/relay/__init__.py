"""The relay process (`inbox relay`): delivers outbox messages, at least once.

- `loop`: the claimer (`Relay`) and its delivery threads (`Lanes`);
- `routes`: `INBOX_ROUTES`, which topic goes where;
- `transports/`: how a message leaves (HTTP, SMTP, log);
- `store`: the relay's named queries.
"""
