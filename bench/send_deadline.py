"""send-deadline: what the watchdog costs each send (docs/decisions.md, "Every send has a
total time limit").

`python -m bench.send_deadline [--sends 200000] [--threads 1 16]` (not part of
`python -m bench`; no database). Each thread does, per send, what the HTTP transport does on
a kept connection: `start` a watch with the connection's cutter and `stop` it, with the
watchdog's thread ticking meanwhile. Prints the cost per send in microseconds (wall
time of all threads / sends) for each thread count.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time

from inbox.relay.transports.deadline import Cutter, Watchdog

LIMIT_SECONDS = 15.0


def per_send_micros(sends: int, threads: int) -> float:
    watchdog = Watchdog()
    left, right = socket.socketpair()
    cutters = [Cutter(left) for _ in range(threads)]
    each = sends // threads

    def sender(cutter: Cutter) -> None:
        for _ in range(each):
            watchdog.stop(watchdog.start(LIMIT_SECONDS, cutter))

    workers = [threading.Thread(target=sender, args=(c,)) for c in cutters]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    watchdog.close()
    for cutter in cutters:
        cutter.close()
    left.close()
    right.close()
    return elapsed / (each * threads) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.send_deadline")
    parser.add_argument("--sends", type=int, default=200_000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    for threads in args.threads:
        micros = per_send_micros(args.sends, threads)
        print(f"{threads:>3} threads: {micros:.2f} µs per send"
              f" ({1e6 / micros:,.0f} sends/s of watchdog work on one core)")


if __name__ == "__main__":
    main()
