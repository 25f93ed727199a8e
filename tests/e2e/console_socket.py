"""The console's live socket, as a browser would open it (session cookie and Origin)."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.client import connect


async def next_event(ws, *, event: str, where=lambda payload: True, timeout: float = 30) -> dict:
    async def find():
        async for raw in ws:
            msg = json.loads(raw)
            if msg.get("event") == event and where(msg["payload"]):
                return msg["payload"]

    return await asyncio.wait_for(find(), timeout)


def open_console_socket(console):
    return connect(
        f"ws://127.0.0.1:{console.port}/ws/console/",
        additional_headers={"Cookie": console.cookie_header(), "Origin": f"http://127.0.0.1:{console.port}"},
    )
