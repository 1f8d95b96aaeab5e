"""aiohttp as the driver's HTTP client, for benchmarks/load_generator.py (`--clients aiohttp`).

`AiohttpClient` has the interface `kvexp.workloads.driver` uses of `http11.Client`
(`post`, `release`, `aclose`; a response with `status`, `chunks()`, `read()`), so the
driver runs unchanged (its scheduling, SSE parsing and rows) with only the HTTP client
swapped: `install()` puts it in the driver's place in this process. One
`aiohttp.ClientSession` with keep-alive connections and no connection limit, as
`vllm bench serve` uses it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp

from kvexp.workloads import driver
from kvexp.workloads.http11 import Origin


class AiohttpResponse:
    """A streamed aiohttp reply, read as `http11.Response` is."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.status = resp.status

    async def chunks(self) -> AsyncIterator[bytes]:
        async for data in self.resp.content.iter_any():
            yield data

    async def read(self) -> bytes:
        return await self.resp.read()


class AiohttpClient:
    """POSTs through one aiohttp session (opened on first use, in the running loop)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=False),
                timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False)
        return self._session

    async def post(self, origin: Origin, path: str,
                   body: bytes) -> tuple[None, AiohttpResponse]:
        url = f"{origin.scheme}://{origin.host_header}{origin.base_path}{path}"
        resp = await self._open().post(url, data=body, headers={
            "content-type": "application/json", "accept": "text/event-stream"})
        return None, AiohttpResponse(resp)

    def release(self, origin: Origin, resp: AiohttpResponse | None, conn: None) -> None:
        if resp is not None:
            resp.resp.release()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def install() -> None:
    """Make the driver use aiohttp in this process."""
    driver.Client = AiohttpClient  # type: ignore[misc,assignment]
