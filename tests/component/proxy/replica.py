"""A tiny keep-alive HTTP/1.1 server run as its own process, so that a test can kill -9 it.

Usage: python replica.py NAME. Prints its port on the first line of stdout, then answers every
request with 200 and a body naming it (x-delay: seconds, to answer later) until killed.
"""

from __future__ import annotations

import asyncio
import sys


async def serve(name: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length, delay = 0, 0.0
            for line in head.split(b"\r\n")[1:]:
                key, _, value = line.partition(b":")
                if key.lower() == b"content-length":
                    length = int(value)
                elif key.lower() == b"x-delay":
                    delay = float(value)
            if length:
                await reader.readexactly(length)
            if delay:
                await asyncio.sleep(delay)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nx-backend: %b\r\n\r\n%b"
                % (len(name), name, name)
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(name: str) -> None:
    server = await asyncio.start_server(
        lambda r, w: serve(name.encode(), r, w), "127.0.0.1", 0, backlog=1024
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
