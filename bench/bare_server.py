"""The baseline: a bare `websockets` server that answers every frame with a small ack frame.

Same library defaults a plain asyncio service would run with (keepalive ping
every 20 s, like Daphne), no compression (Daphne does not negotiate it either),
and the same envelope decoding cost as the real server (msgspec), so the ratio
to Caisey is the cost of Daphne + Channels + the bridge, not of JSON.

    python bench/bare_server.py PORT
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time
import uuid

import msgspec
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


class Frame(msgspec.Struct):
    type: str
    id: str
    ts: float
    body: dict


_decode = msgspec.json.Decoder(Frame).decode
_encode = msgspec.json.encode


async def handler(ws) -> None:
    try:
        async for raw in ws:
            try:
                ref = _decode(raw).id
            except msgspec.DecodeError:
                continue
            await ws.send(
                _encode(
                    {"type": "ack", "id": uuid.uuid4().hex, "ts": time.time(), "body": {"ref": ref, "duplicate": False}}
                ).decode()
            )
    except ConnectionClosed:
        pass


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=1024 * 1024):
        await asyncio.Future()


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(int(sys.argv[1])))
