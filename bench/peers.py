"""Peer libraries draining no-op jobs on the same PostgreSQL: PgQueuer and Procrastinate.

Each runs in its own process (`python -m bench.peers NAME URL JOBS ...`), so it gets
a fresh interpreter and event loop like a real worker dyno, and prints one JSON line:
the seconds from the worker's start until the queue is empty.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import timedelta

ENQUEUE_BATCH = 10_000


async def pgqueuer_enqueue(url: str, jobs: int) -> None:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries

    conn = await asyncpg.connect(url)
    try:
        queries = Queries(AsyncpgDriver(conn))
        await queries.install()
        for start in range(0, jobs, ENQUEUE_BATCH):
            size = min(ENQUEUE_BATCH, jobs - start)
            await queries.enqueue(["noop"] * size, [None] * size, [0] * size)
    finally:
        await conn.close()


async def pgqueuer_drain(url: str, batch_size: int) -> float:
    """One QueueManager on one connection, in drain mode: returns when the queue is empty."""
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries, QueueManager
    from pgqueuer.types import QueueExecutionMode

    conn = await asyncpg.connect(url)
    try:
        manager = QueueManager(Queries(AsyncpgDriver(conn)))

        @manager.entrypoint("noop")
        async def noop(job) -> None:
            return None

        started = time.perf_counter()
        await manager.run(batch_size=batch_size, mode=QueueExecutionMode.drain,
                          dequeue_timeout=timedelta(seconds=1))
        return time.perf_counter() - started
    finally:
        await conn.close()


def procrastinate_app(url: str):
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="noop", queue="bench")
    async def noop() -> None:
        return None

    return app, noop


async def procrastinate_enqueue(url: str, jobs: int) -> None:
    app, noop = procrastinate_app(url)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        for start in range(0, jobs, ENQUEUE_BATCH):
            size = min(ENQUEUE_BATCH, jobs - start)
            await noop.batch_defer_async(*({} for _ in range(size)))


async def procrastinate_drain(url: str, concurrency: int) -> float:
    """One worker with `concurrency` async slots; wait=False returns once the queue is empty.

    Finished jobs are deleted (`delete_jobs="always"`), Procrastinate's fastest setting.
    """
    app, _ = procrastinate_app(url)
    async with app.open_async():
        started = time.perf_counter()
        await app.run_worker_async(queues=["bench"], concurrency=concurrency, wait=False,
                                   delete_jobs="always", install_signal_handlers=False,
                                   listen_notify=False)
        return time.perf_counter() - started


def main(argv: list[str]) -> int:
    name, command, url, number = argv[0], argv[1], argv[2], int(argv[3])
    if command == "enqueue":
        enqueue = {"pgqueuer": pgqueuer_enqueue, "procrastinate": procrastinate_enqueue}[name]
        asyncio.run(enqueue(url, number))
        return 0
    drain = {"pgqueuer": pgqueuer_drain, "procrastinate": procrastinate_drain}[name]
    seconds = asyncio.run(drain(url, number))
    print("BENCH_JSON " + json.dumps({"seconds": seconds}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
