"""The driver's HTTP/1.1 client: framing, keep-alive reuse, connections the server closed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from kvexp.workloads.http11 import Client, ConnectError, Origin, ProtocolError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[bool]]


async def _serve(handler: Handler) -> tuple[asyncio.AbstractServer, Origin, list[int]]:
    """A server calling `handler(reader, writer, request number)` per request; it says
    whether to keep the connection. Returns the server, its origin, requests per connection."""
    counts: list[int] = []

    async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = len(counts)
        counts.append(0)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                counts[number] += 1
                if not await handler(reader, writer, sum(counts) - 1):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, Origin.parse(f"http://127.0.0.1:{port}/base/"), counts


async def _post(client: Client, origin: Origin) -> tuple[int, bytes]:
    conn, resp = await client.post(origin, "/v1/x", b'{"a": 1}')
    try:
        return resp.status, await resp.read()
    finally:
        client.release(origin, resp, conn)


def test_chunked_reply_split_anywhere_and_reused() -> None:
    body = b"data: one\n\ndata: two\n\n"
    wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:5], body[5:])) + b"0\r\n\r\n"

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for i in range(len(wire)):  # one byte at a time: every boundary is a read boundary
            w.write(wire[i : i + 1])
            await w.drain()
            await asyncio.sleep(0)
        return True

    async def main() -> None:
        server, origin, counts = await _serve(handler)
        client = Client()
        async with server:
            assert await _post(client, origin) == (200, body)
            assert await _post(client, origin) == (200, body)
            await client.aclose()
        assert counts == [2]  # one connection, kept alive

    asyncio.run(main())


def test_content_length_until_close_and_connection_close() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> bool:
        if n == 0:
            w.write(b"HTTP/1.1 404 X\r\ncontent-length: 5\r\n\r\nnope!")
            return True
        if n == 1 or n == 2:
            w.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
            return False
        w.write(b"HTTP/1.0 200 OK\r\n\r\nuntil close")
        return False

    async def main() -> None:
        server, origin, counts = await _serve(handler)
        client = Client()
        async with server:
            assert await _post(client, origin) == (404, b"nope!")
            assert await _post(client, origin) == (200, b"ok")  # same connection, then closed
            assert await _post(client, origin) == (200, b"ok")
            assert await _post(client, origin) == (200, b"until close")
            await client.aclose()
        assert counts == [2, 1, 1]

    asyncio.run(main())


def test_connection_closed_while_idle_is_retried_once() -> None:
    """Servers drop idle keep-alive connections without saying so (uvicorn after 5 s)."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int) -> bool:
        if i == 1:
            return False  # the request met a connection being closed: no reply at all
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await w.drain()
        return i != 2  # after request 2, closed while idle

    async def main() -> None:
        server, origin, counts = await _serve(handler)
        client = Client()
        async with server:
            assert await _post(client, origin) == (200, b"ok")
            assert await _post(client, origin) == (200, b"ok")  # sent again, new connection
            assert counts == [2, 1]
            await asyncio.sleep(0.05)  # the close has reached the client: not taken
            assert await _post(client, origin) == (200, b"ok")
            await client.aclose()
        assert counts == [2, 1, 1]

    asyncio.run(main())


def test_errors() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nabc")
        await w.drain()
        return False  # mid-chunk

    async def main() -> None:
        server, origin, _ = await _serve(handler)
        client = Client()
        async with server:
            conn, resp = await client.post(origin, "/", b"{}")
            assert resp.status == 200
            with pytest.raises(ProtocolError, match="IncompleteReadError"):
                await resp.read()
            client.release(origin, resp, conn)
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectError, match="ConnectionRefused"):
            await client.post(origin, "/", b"{}")
        await client.aclose()

    asyncio.run(main())


def test_origin() -> None:
    o = Origin.parse("http://127.0.0.1:8000/")
    assert (o.scheme, o.host, o.port, o.base_path, o.host_header) == (
        "http", "127.0.0.1", 8000, "", "127.0.0.1:8000")
    assert Origin.parse("https://example.org/api").host_header == "example.org"
    assert Origin.parse("https://example.org/api").base_path == "/api"
    assert Origin.parse("http://[::1]:9/").host_header == "[::1]:9"
    with pytest.raises(ValueError, match="not an http"):
        Origin.parse("ftp://x")
