"""A test-side agent speaking the real protocol to the ASGI app through WebsocketCommunicator."""

from __future__ import annotations

from channels.testing import WebsocketCommunicator

from caisey.asgi import application
from caisey_agent import protocol as p


class FakeAgent:
    def __init__(self, path: str = "/ws/agent/") -> None:
        self.comm = WebsocketCommunicator(application, path)

    async def connect(self) -> None:
        connected, _ = await self.comm.connect()
        assert connected

    async def send(self, body, *, id: str | None = None) -> str:
        env = p.envelope(body, id=id)
        await self.comm.send_to(text_data=p.encode(env))
        return env.id

    async def send_raw(self, text: str | None = None, data: bytes | None = None) -> None:
        await self.comm.send_to(text_data=text, bytes_data=data)

    async def recv(self, timeout: float = 3) -> p.Envelope:
        raw = await self.comm.receive_from(timeout=timeout)
        return p.decode(raw, accept=p.SERVER_TO_AGENT)

    async def hello(self, endpoint_id: str, credential: str, **kwargs) -> p.Envelope:
        await self.send(p.Hello(endpoint_id=str(endpoint_id), credential=credential, agent_version="test", **kwargs))
        return await self.recv()

    async def expect_close(self, timeout: float = 3) -> int:
        out = await self.comm.receive_output(timeout=timeout)
        while out["type"] != "websocket.close":
            out = await self.comm.receive_output(timeout=timeout)
        return out.get("code")

    async def close(self) -> None:
        await self.comm.disconnect()
