"""A small HTTP/1.1 load generator, for bench/api.py where `wrk` is not installed.

Run in a process of its own: N keep-alive connections on loopback, each sending the next GET as
soon as the previous response has been read, for a fixed time. Prints one JSON object:
requests completed, non-200 responses, connection errors, and every latency in seconds.

    python bench/_load.py URL --connections 64 --seconds 8 [--header 'X-API-Key: ...']

It is pure asyncio (uvloop when installed), reading Content-Length framed responses, which is
what uvicorn sends for JSON. One Python process tops out far below wrk, so with it the bench's
figures are those of the load generator as much as the server's: install wrk to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    non_200: int = 0
    errors: int = 0
    seconds: float = 0.0


async def _connection(host: str, port: int, request: bytes, deadline: float, tally: Tally) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        tally.errors += 1
        return
    try:
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            tally.latencies.append(time.perf_counter() - sent)
            if status != 200:
                tally.non_200 += 1
    except (OSError, asyncio.IncompleteReadError):
        tally.errors += 1
    finally:
        writer.close()


async def generate(url: str, connections: int, seconds: float, headers: list[str]) -> Tally:
    """Load `url` from `connections` connections for `seconds`; the tally."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", *headers, "", ""]
    request = "\r\n".join(lines).encode()
    tally = Tally()
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(
            _connection(parts.hostname or "127.0.0.1", parts.port or 80, request, deadline, tally)
            for _ in range(connections)
        )
    )
    tally.seconds = time.perf_counter() - started
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--header", action="append", default=[])
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    tally = runner(generate(args.url, args.connections, args.seconds, args.header))
    print(json.dumps(asdict(tally)))


if __name__ == "__main__":
    main()
