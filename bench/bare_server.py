"""The baseline: a bare `websockets` server that answers every frame with a small ack frame.

Same library defaults a plain asyncio service would run with (keepalive ping
every 20 s, like Daphne), no compression (Daphne does not negotiate it either),
and the same envelope decoding cost as the real server (msgspec), so the ratio
to Caisey is the cost of Daphne + Channels + the bridge, not of JSON.

    python bench/bare_server.py PORT [--processes N]

With ``--processes N`` it runs as `manage.py serve` does: this process binds one listening socket
and N children accept on it (the kernel hands each connection to one of them). Commands, one JSON
line each on stdin, are handed to every child and their answers merged into one line on stdout:

  {"cmd": "fanout", "ids": [endpoint id, ...]}  send an `action.run` to each of those agents (each
      child to those connected to it) and wait until every one is acknowledged and its
      `action.result` is back: the floor of Caisey's fan-out (the same frames on the wire, no
      database, no channel layer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
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

agents: dict[str, object] = {}  # endpoint id (from its hello) -> its connection, in this process
waiting_acks: dict[str, asyncio.Future] = {}  # action.run envelope id -> future
waiting_results: dict[str, asyncio.Future] = {}  # action id -> future


def _done(table: dict, key) -> None:
    fut = table.pop(key, None)
    if fut is not None and not fut.done():
        fut.set_result(time.perf_counter())


async def handler(ws) -> None:
    eid = None
    try:
        async for raw in ws:
            try:
                frame = _decode(raw)
            except msgspec.DecodeError:
                continue
            if frame.type == "hello":
                eid = str(frame.body.get("endpoint_id", ""))
                agents[eid] = ws
            elif frame.type == "ack" and waiting_acks:
                _done(waiting_acks, frame.body.get("ref"))
            elif frame.type == "action.result" and waiting_results:
                _done(waiting_results, frame.body.get("action_id"))
            await ws.send(
                _encode(
                    {
                        "type": "ack",
                        "id": uuid.uuid4().hex,
                        "ts": time.time(),
                        "body": {"ref": frame.id, "duplicate": False},
                    }
                ).decode()
            )
    except ConnectionClosed:
        pass
    finally:
        if eid is not None and agents.get(eid) is ws:
            del agents[eid]


async def fanout(ids: list[str]) -> dict:
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    acks, results = [], []
    for eid in ids:
        ws = agents.get(eid)
        if ws is None:
            continue
        env_id, action_id = uuid.uuid4().hex, str(uuid.uuid4())
        acks.append(waiting_acks.setdefault(env_id, loop.create_future()))
        results.append(waiting_results.setdefault(action_id, loop.create_future()))
        body = {"action_id": action_id, "kind": "system_summary", "category": "diagnostic", "params": {}}
        try:
            await ws.send(_encode({"type": "action.run", "id": env_id, "ts": time.time(), "body": body}).decode())
        except ConnectionClosed:
            pass
    try:
        acked = await asyncio.wait_for(asyncio.gather(*acks), timeout=120)
        done = await asyncio.wait_for(asyncio.gather(*results), timeout=120)
    except TimeoutError:
        return {"sent": len(acks), "acked": sum(f.done() for f in acks), "results": sum(f.done() for f in results)}
    return {
        "sent": len(acks),
        "acked": len(acked),
        "results": len(done),
        "all_acked_s": (max(acked) - t0) if acked else 0.0,
        "all_results_s": (max(done) - t0) if done else 0.0,
    }


async def commands() -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            await asyncio.Future()  # stdin closed (run without a controller): serve on
        msg = json.loads(line)
        reply = await fanout(msg["ids"]) if msg.get("cmd") == "fanout" else {"error": f"unknown {msg!r}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


async def main(*, port: int | None, fd: int | None) -> None:
    if fd is not None:
        sock = socket.socket(fileno=fd)
        server = serve(handler, sock=sock, compression=None, max_size=1024 * 1024)
    else:
        server = serve(handler, "127.0.0.1", port, compression=None, max_size=1024 * 1024)
    async with server:
        await commands()


def supervise(port: int, processes: int) -> None:
    """N children on one listening socket; stdin commands go to each, their answers are merged."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--fd", str(sock.fileno())],
            pass_fds=(sock.fileno(),),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for line in sys.stdin:
            for child in children:
                child.stdin.write(line)
                child.stdin.flush()
            replies = [json.loads(child.stdout.readline()) for child in children]
            merged = {k: sum(r.get(k, 0) for r in replies) for k in ("sent", "acked", "results")}
            for key in ("all_acked_s", "all_results_s"):
                values = [r[key] for r in replies if key in r]
                merged[key] = max(values) if len(values) == len(replies) else None
            merged["per_process"] = [r.get("sent", 0) for r in replies]
            sys.stdout.write(json.dumps(merged) + "\n")
            sys.stdout.flush()
        for child in children:
            child.wait()
    finally:
        for child in children:
            child.terminate()


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int, nargs="?")
    parser.add_argument("--processes", type=int, default=0, help="children sharing one socket (0: this process serves)")
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.processes > 0:
        supervise(args.port, args.processes)
    else:
        asyncio.run(main(port=args.port, fd=args.fd))
    os._exit(0)
