"""A lean HTTP/1.1 client on asyncio streams: POST a body, read the reply as it arrives.

What the driver needs and no more: keep-alive connections kept on a free list per
server (one request per connection at a time), chunked / content-length / until-close
bodies, http and https. A connection that was idle may have been closed by the server
(uvicorn closes idle ones after 5 s): such a request is sent again, once, on a new
connection if nothing of the reply came back.

Written for load generation: httpx + httpcore + anyio cost ~1 ms of CPU per short
streamed reply on a 2-core machine (docs/benchmarks.md, "Load generator"), which held
back the send rate and the send lag at a few hundred requests per second.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024


class ConnectError(OSError):
    """No connection could be made."""


class ProtocolError(Exception):
    """The server broke HTTP/1.1 framing or closed the connection mid-reply."""


@dataclass(frozen=True)
class Origin:
    """Where requests go: scheme, host, port and the base URL's path."""

    scheme: str
    host: str
    port: int
    base_path: str

    @classmethod
    def parse(cls, base_url: str) -> Origin:
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        port = u.port or (443 if u.scheme == "https" else 80)
        return cls(u.scheme, u.hostname, port, u.path.rstrip("/"))

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


class Connection:
    """One open connection; `reused` once it has answered a request."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reused = False

    def usable(self) -> bool:
        return not (self.writer.is_closing() or self.reader.at_eof())

    def close(self) -> None:
        self.writer.close()


class Response:
    """A reply whose head has been read; the body is read with `chunks()` or `read()`."""

    def __init__(self, conn: Connection, status: int, headers: dict[str, str]) -> None:
        self.conn = conn
        self.status = status
        self.headers = headers
        self.complete = False  # the body was read to its end
        self.keep_alive = headers.get("connection", "").lower() != "close"

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive (chunked encoding decoded), one piece per read."""
        reader = self.conn.reader
        try:
            if "chunked" in self.headers.get("transfer-encoding", "").lower():
                async for data in self._dechunk():
                    yield data
            elif "content-length" in self.headers:
                left = int(self.headers["content-length"])
                while left > 0:
                    data = await reader.read(min(left, 1 << 16))
                    if not data:
                        raise asyncio.IncompleteReadError(b"", left)
                    left -= len(data)
                    yield data
            else:
                self.keep_alive = False
                while data := await reader.read(1 << 16):
                    yield data
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            raise ProtocolError(f"{type(e).__name__}: {e}") from None
        self.complete = True

    async def _dechunk(self) -> AsyncIterator[bytes]:
        """Chunked transfer coding, decoded from whole reads (not one await per chunk)."""
        reader = self.conn.reader
        buf, pos = b"", 0
        while True:
            out = []
            while (eol := buf.find(b"\r\n", pos)) >= 0:
                size = int(buf[pos:eol].split(b";", 1)[0], 16)
                if size == 0:
                    end = buf.find(b"\r\n\r\n", eol)  # the end of the (usually empty) trailers
                    if end < 0:
                        break
                    if out:
                        yield b"".join(out)
                    if end + 4 != len(buf):
                        self.keep_alive = False  # bytes after the reply: do not reuse
                    return
                start = eol + 2
                if len(buf) < start + size + 2:
                    break
                out.append(buf[start : start + size])
                pos = start + size + 2
            if out:
                yield b"".join(out)
            buf, pos = buf[pos:], 0
            if len(buf) > MAX_HEAD_BYTES and buf.find(b"\r\n") < 0:
                raise ProtocolError("chunk size line too long")
            data = await reader.read(1 << 16)
            if not data:
                raise asyncio.IncompleteReadError(buf, None)
            buf += data

    async def read(self) -> bytes:
        return b"".join([c async for c in self.chunks()])


class Client:
    """Free lists of keep-alive connections, per origin; one request per connection."""

    def __init__(self) -> None:
        self._free: dict[Origin, list[Connection]] = {}
        self._open: set[Connection] = set()
        self._ssl: ssl.SSLContext | None = None

    async def _connect(self, origin: Origin) -> Connection:
        ctx = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            ctx = self._ssl
        try:
            reader, writer = await asyncio.open_connection(
                origin.host, origin.port, ssl=ctx, limit=MAX_HEAD_BYTES
            )
        except OSError as e:
            raise ConnectError(f"{type(e).__name__}: {e}") from e
        conn = Connection(reader, writer)
        self._open.add(conn)
        return conn

    def _take(self, origin: Origin) -> Connection | None:
        free = self._free.get(origin)
        while free:
            conn = free.pop()
            if conn.usable():
                return conn
            self._discard(conn)
        return None

    def _discard(self, conn: Connection) -> None:
        conn.close()
        self._open.discard(conn)

    def release(self, origin: Origin, resp: Response | None, conn: Connection) -> None:
        """Give a connection back after its reply: kept if it can carry another."""
        if resp is not None and resp.complete and resp.keep_alive and conn.usable():
            conn.reused = True
            self._free.setdefault(origin, []).append(conn)
        else:
            self._discard(conn)

    async def post(self, origin: Origin, path: str, body: bytes) -> tuple[Connection, Response]:
        """Send a POST and read the reply's head; the caller reads the body, then `release`s."""
        head = (
            f"POST {origin.base_path}{path} HTTP/1.1\r\nhost: {origin.host_header}\r\n"
            f"content-type: application/json\r\naccept: text/event-stream\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode() + body
        conn = self._take(origin)
        if conn is not None:
            try:
                return conn, await self._exchange(conn, head)
            except (ConnectionError, ProtocolError):
                self._discard(conn)  # closed while idle: once more, on a new connection
            except BaseException:
                self._discard(conn)
                raise
        conn = await self._connect(origin)
        try:
            return conn, await self._exchange(conn, head)
        except BaseException:
            self._discard(conn)
            raise

    async def _exchange(self, conn: Connection, request: bytes) -> Response:
        conn.writer.write(request)
        await conn.writer.drain()
        try:
            raw = await conn.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            raise ProtocolError(f"no reply head ({type(e).__name__})") from None
        lines = raw.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        try:
            status = int(rest[:3])
        except ValueError:
            raise ProtocolError(f"bad status line {lines[0][:100]!r}") from None
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        resp = Response(conn, status, headers)
        if version != "HTTP/1.1":
            resp.keep_alive = False
        return resp

    async def aclose(self) -> None:
        conns = list(self._open)
        self._open.clear()
        self._free.clear()
        for conn in conns:
            conn.close()
        await asyncio.gather(*(c.writer.wait_closed() for c in conns), return_exceptions=True)
