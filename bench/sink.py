"""A local HTTP sink for the relay benchmark: answers 200 to every request, keep-alive.

`python -m bench.sink PORT` serves on 127.0.0.1:PORT with asyncio, with the least work an
HTTP/1.1 server can do (read the head, skip Content-Length bytes, answer), so the relay,
not the sink, is what the benchmark measures; wrk measures the sink's own ceiling. `GET
/count` answers the number of requests received so far.
"""

from __future__ import annotations

import asyncio
import sys

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class Sink(asyncio.Protocol):
    received = 0

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buffer = b""
        self.skip = 0

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.skip:
                taken = min(self.skip, len(self.buffer))
                self.buffer = self.buffer[taken:]
                self.skip -= taken
                if self.skip:
                    return
                Sink.received += 1
                self.transport.write(OK)
                continue
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if head.startswith(b"GET /count"):
                body = str(Sink.received).encode()
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                                     % (len(body), body))
                continue
            if length:
                self.skip = length
                continue
            Sink.received += 1
            self.transport.write(OK)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Sink, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
