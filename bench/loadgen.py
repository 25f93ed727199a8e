"""Load generator worker: simulated agents over real WebSockets.

Started by bench/bridge.py as a subprocess (one or more of them) and driven by
JSON commands, one per line on stdin; each command gets one JSON line back on
stdout. Logs go to stderr.

In "caisey" mode an agent speaks the real protocol (caisey_agent.protocol):
hello -> welcome, heartbeats acked by the server, every server event
(mode.set, action.run, ...) acknowledged by id, action.run answered at once
with ActionOutput seq 0 on the "status" stream ("started") and a succeeded
ActionResult. In "bare" mode the same frames go to the bare echo server,
which answers each frame with an ack; the first ack completes the handshake.

Commands:
  {"cmd": "connect", "url", "mode", "agents": [[id, credential], ...], "concurrency", "ping_interval"}
  {"cmd": "hb_start"} / {"cmd": "hb_stop"}   lazy heartbeats, each agent at its own interval
  {"cmd": "reconnect_mode", "url": ...}       from now on a dropped agent reconnects (backoff, jitter)
  {"cmd": "await_back", "since": t}           wait until every agent reconnected after wall time t
  {"cmd": "burst", "agents": K, "seconds": S}  K agents beat back to back for S seconds
  {"cmd": "stats", "reset": bool}
  {"cmd": "close"}                            close every connection
  {"cmd": "exit"}
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import random
import resource
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "agent"))

import msgspec
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from caisey_agent import protocol as p
from caisey_agent.runner import backoff_delay

AGENT_VERSION = "bench-0"  # bench/sim_fleet.py sets Worker.agent_version
LAZY_INTERVAL = 60.0


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


class Agent:
    __slots__ = (
        "back_at",
        "close_code",
        "closed",
        "cred",
        "eid",
        "hb_gen",
        "interval",
        "link_delay",
        "machine",
        "mode",
        "seen",
        "ws",
    )

    def __init__(self, eid: str, cred: str, *, machine: dict | None = None, link_delay: float = 0.0) -> None:
        self.eid = eid
        self.cred = cred
        # What hello reports of the machine (bench/sim_fleet.py names its agents; the bench does not).
        self.machine = machine or {"hostname": f"bench-{eid[:8]}", "os": "linux"}
        # A slow link (bench/sim_fleet.py): each frame from the server is handled this late.
        self.link_delay = link_delay
        self.ws = None
        self.interval = LAZY_INTERVAL
        self.mode = "lazy"
        self.closed = False
        self.seen: set[str] | None = None
        self.close_code = None
        self.back_at = 0.0  # wall time of the last reconnect
        self.hb_gen = 0  # bumped by mode.set: its heartbeat chain restarts at the new cadence


class Worker:
    def __init__(self) -> None:
        self.mode = "caisey"
        self.agent_version = AGENT_VERSION
        self.agents: list[Agent] = []
        self.tasks: set[asyncio.Task] = set()
        self.counters: Counter = Counter()
        self.pending: dict[str, float] = {}  # heartbeat id -> sent at (lazy cadence)
        self.waiters: dict[str, asyncio.Future] = {}  # heartbeat id -> future (burst)
        self.hb_rtts: list[float] = []
        self.hb_task: asyncio.Task | None = None
        self.hb_heap: list | None = None
        self.honour_cadence = True  # beat at the cadence mode.set asks for, as the real agent does
        self.reconnect: dict | None = None  # set by cmd_reconnect_mode: reconnect like caisey-agent
        self.reconnect_failures: Counter = Counter()
        self.reconnect_failed_at: list[tuple[float, str]] = []  # (attempt's wall time, reason); refused TCP not kept

    # --- frames -----------------------------------------------------------------------

    def decode(self, raw):
        if self.mode == "caisey":
            return p.decode(raw, accept=p.SERVER_TO_AGENT, max_bytes=p.MAX_FRAME_BYTES * 4)
        data = msgspec.json.decode(raw)
        if data["type"] != p.Ack.TYPE:  # the bare server's fan-out: a real action.run, answered as in Caisey
            return p.decode(raw, accept=p.SERVER_TO_AGENT, max_bytes=p.MAX_FRAME_BYTES * 4)
        return p.Envelope(type=data["type"], id=data["id"], ts=data["ts"], body=p.Ack(ref=data["body"].get("ref", "")))

    async def send(self, agent: Agent, body, *, id: str | None = None) -> str:
        env = p.envelope(body, id=id)
        await agent.ws.send(p.encode(env))
        return env.id

    async def handshake(self, agent: Agent, url: str, ping_interval: float | None) -> None:
        ws = await connect(
            url,
            open_timeout=60,
            ping_interval=ping_interval,
            ping_timeout=60 if ping_interval else None,
            max_size=p.MAX_FRAME_BYTES * 4,
            compression=None,
            close_timeout=5,
        )
        agent.ws = ws
        hello = p.Hello(
            endpoint_id=agent.eid,
            credential=agent.cred,
            agent_version=self.agent_version,
            machine=agent.machine,
            mode="lazy",
        )
        hello_id = await self.send(agent, hello)
        while True:
            env = self.decode(await asyncio.wait_for(ws.recv(), timeout=60))
            if env.type == p.Welcome.TYPE:
                agent.mode = env.body.mode
                agent.interval = env.body.heartbeat_interval
                return
            if env.type == p.Ack.TYPE and (self.mode == "bare" or env.body.ref == hello_id):
                if self.mode == "bare":
                    return
                continue
            if env.type == p.Error.TYPE:
                raise RuntimeError(f"error:{env.body.code}")

    async def reader(self, agent: Agent) -> None:
        ws = agent.ws
        try:
            async for raw in ws:
                try:
                    env = self.decode(raw)
                except Exception as exc:  # noqa: BLE001
                    self.counters["bad_frames"] += 1
                    print(f"bad frame: {exc}", file=sys.stderr)
                    continue
                if agent.link_delay:
                    await asyncio.sleep(agent.link_delay)
                await self.on_frame(agent, env)
        except ConnectionClosed:
            pass
        except Exception as exc:  # noqa: BLE001
            self.counters[f"reader_error:{type(exc).__name__}"] += 1
            print(f"reader error: {exc!r}", file=sys.stderr)
        finally:
            agent.closed = True
            agent.close_code = ws.close_code
            if not getattr(self, "closing", False):
                self.counters[f"dropped:{ws.close_code}"] += 1
                if self.reconnect is not None:
                    self._spawn(self.reconnect_loop(agent))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def reconnect_loop(self, agent: Agent) -> None:
        """What caisey-agent does when its socket drops: capped exponential backoff, full jitter,
        starting afresh after a healthy connection. Refused TCP connects (the server is down) are
        expected; a refused or timed-out handshake once it is up is a failure the report shows."""
        cfg = self.reconnect
        attempt = 0
        while not getattr(self, "closing", False):
            await asyncio.sleep(backoff_delay(attempt, base=cfg["base"], cap=cfg["cap"]))
            attempt += 1
            started = time.time()
            try:
                await self.handshake(agent, cfg["url"], cfg["ping_interval"])
            except TimeoutError:  # an OSError too: caught first
                reason = "timeout"
            except OSError:
                self.reconnect_failures["server_down"] += 1
                continue
            except InvalidStatus as exc:
                reason = f"http_{exc.response.status_code}"
            except ConnectionClosed as exc:
                reason = f"closed_{exc.rcvd.code if exc.rcvd else 'noframe'}"
            except Exception as exc:  # noqa: BLE001
                reason = str(exc)[:60] or type(exc).__name__
            else:
                agent.closed = False
                agent.back_at = time.time()
                self.counters["reconnected"] += 1
                self._spawn(self.reader(agent))
                return
            self.reconnect_failures[reason] += 1
            self.reconnect_failed_at.append((started, reason))
            if agent.ws is not None:
                with contextlib.suppress(Exception):
                    await agent.ws.close()

    async def on_frame(self, agent: Agent, env) -> None:
        kind = env.type
        if kind == p.Ack.TYPE:
            ref = env.body.ref
            sent = self.pending.pop(ref, None)
            if sent is not None:
                self.hb_rtts.append(time.perf_counter() - sent)
                self.counters["hb_acked"] += 1
                return
            fut = self.waiters.pop(ref, None)
            if fut is not None:
                if not fut.done():
                    fut.set_result(time.perf_counter())
                return
            self.counters["acks_other"] += 1
            return
        if kind == p.Error.TYPE:
            self.counters[f"server_error:{env.body.code}"] += 1
            return
        if kind == p.Welcome.TYPE:
            return
        # A server event: acknowledged by id; deduplicated like the real agent.
        self.counters[f"recv:{kind}"] += 1
        if agent.seen is None:
            agent.seen = set()
        first = env.id not in agent.seen
        agent.seen.add(env.id)
        await self.send(agent, p.Ack(ref=env.id, duplicate=not first))
        if not first:
            self.counters["duplicates"] += 1
            return
        if kind == p.ModeSet.TYPE:
            agent.mode = env.body.mode
            if self.honour_cadence:
                agent.interval = env.body.heartbeat_interval
                self.beat_now(agent)
        elif kind == p.ActionRun.TYPE:
            now = time.time()
            action_id = env.body.action_id
            await self.send(agent, p.ActionOutput(action_id=action_id, seq=0, stream="status", data="started"))
            await self.send(
                agent,
                p.ActionResult(
                    action_id=action_id,
                    status="succeeded",
                    exit_code=0,
                    result={**agent.machine, "uptime_s": 1234},
                    started_at=now,
                    finished_at=time.time(),
                ),
            )
            self.counters["actions_answered"] += 1

    # --- commands ------------------------------------------------------------------------

    async def cmd_connect(self, msg: dict) -> dict:
        self.mode = msg["mode"]
        self.honour_cadence = msg.get("honour_cadence", True)
        url = msg["url"]
        ping = msg.get("ping_interval") or None
        sem = asyncio.Semaphore(int(msg.get("concurrency", 100)))
        failures: Counter = Counter()
        latencies: list[float] = []
        new: list[Agent] = []

        async def one(eid: str, cred: str) -> None:
            agent = Agent(eid, cred)
            async with sem:
                t0 = time.perf_counter()
                try:
                    await self.handshake(agent, url, ping)
                except InvalidStatus as exc:
                    failures[f"http_{exc.response.status_code}"] += 1
                except ConnectionClosed as exc:
                    failures[f"closed_{exc.rcvd.code if exc.rcvd else 'noframe'}"] += 1
                except TimeoutError:
                    failures["timeout"] += 1
                except OSError as exc:
                    failures[f"os_{exc.errno}_{type(exc).__name__}"] += 1
                except Exception as exc:  # noqa: BLE001
                    failures[str(exc)[:60] or type(exc).__name__] += 1
                else:
                    latencies.append(time.perf_counter() - t0)
                    new.append(agent)
                    task = asyncio.get_running_loop().create_task(self.reader(agent))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
                    return
            if agent.ws is not None:
                with contextlib.suppress(Exception):
                    await agent.ws.close()

        t0 = time.perf_counter()
        await asyncio.gather(*(one(eid, cred) for eid, cred in msg["agents"]))
        self.agents.extend(new)
        return {
            "connected": len(new),
            "failed": sum(failures.values()),
            "failures": dict(failures),
            "seconds": time.perf_counter() - t0,
            "latency_p50_ms": (pct(latencies, 50) or 0) * 1000,
            "latency_p99_ms": (pct(latencies, 99) or 0) * 1000,
            "latency_max_ms": (max(latencies) if latencies else 0) * 1000,
        }

    async def heartbeats(self) -> None:
        now = time.monotonic()
        heap = [(now + random.uniform(0, a.interval), id(a), a.hb_gen, a) for a in self.agents if not a.closed]
        heapq.heapify(heap)
        self.hb_heap = heap
        try:
            while True:
                now = time.monotonic()
                while heap and heap[0][0] <= now:
                    due, key, gen, agent = heapq.heappop(heap)
                    if agent.closed or gen != agent.hb_gen:
                        continue  # gone, or its chain was restarted by a mode.set
                    env = p.envelope(p.Heartbeat(interval=agent.interval, mode=agent.mode))
                    self.pending[env.id] = time.perf_counter()
                    self.counters["hb_sent"] += 1
                    try:
                        await agent.ws.send(p.encode(env))
                    except ConnectionClosed:
                        self.pending.pop(env.id, None)
                        continue
                    heapq.heappush(heap, (max(due + agent.interval, now), key, gen, agent))
                await asyncio.sleep(0.02)
        finally:
            self.hb_heap = None

    def beat_now(self, agent: Agent) -> None:
        """As caisey-agent does on mode.set: a beat at once, then the new cadence."""
        agent.hb_gen += 1
        if self.hb_heap is not None:
            heapq.heappush(self.hb_heap, (time.monotonic(), id(agent), agent.hb_gen, agent))

    async def cmd_hb_start(self, msg: dict) -> dict:
        if self.hb_task is None:
            self.hb_task = asyncio.get_running_loop().create_task(self.heartbeats())
        return {"ok": True}

    async def cmd_hb_stop(self, msg: dict) -> dict:
        if self.hb_task is not None:
            self.hb_task.cancel()
            self.hb_task = None
        return {"ok": True}

    async def cmd_burst(self, msg: dict) -> dict:
        live = [a for a in self.agents if not a.closed][: int(msg["agents"])]
        deadline = time.perf_counter() + float(msg["seconds"])
        rtts: list[float] = []
        timeouts = 0
        loop = asyncio.get_running_loop()

        async def beat(agent: Agent) -> None:
            nonlocal timeouts
            while time.perf_counter() < deadline and not agent.closed:
                env = p.envelope(p.Heartbeat(interval=agent.interval, mode=agent.mode))
                fut = loop.create_future()
                self.waiters[env.id] = fut
                t0 = time.perf_counter()
                try:
                    await agent.ws.send(p.encode(env))
                    t1 = await asyncio.wait_for(fut, timeout=30)
                except TimeoutError:
                    timeouts += 1
                    self.waiters.pop(env.id, None)
                    continue
                except ConnectionClosed:
                    return
                rtts.append(t1 - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(beat(a) for a in live))
        elapsed = time.perf_counter() - t0
        return {
            "agents": len(live),
            "round_trips": len(rtts),
            "seconds": elapsed,
            "timeouts": timeouts,
            "rtt_p50_ms": (pct(rtts, 50) or 0) * 1000,
            "rtt_p99_ms": (pct(rtts, 99) or 0) * 1000,
        }

    async def cmd_reconnect_mode(self, msg: dict) -> dict:
        self.reconnect = {
            "url": msg["url"],
            "ping_interval": msg.get("ping_interval") or None,
            "base": float(msg.get("base", 1.0)),
            "cap": float(msg.get("cap", 60.0)),
        }
        self.reconnect_failures.clear()
        self.reconnect_failed_at.clear()
        return {"agents": len(self.agents)}

    async def cmd_await_back(self, msg: dict) -> dict:
        """Wait until every agent reconnected after `since` (wall time), or the timeout.
        `failed_once_up`: handshakes started after `up_at` (the new server answered) that failed, by reason;
        before it, the old server was closing its connections and the new one not listening yet."""
        since, deadline = msg["since"], time.monotonic() + float(msg.get("timeout", 120))
        up_at = float(msg.get("up_at", since))

        def back() -> list[Agent]:
            return [a for a in self.agents if not a.closed and a.back_at >= since]

        while len(back()) < len(self.agents) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        returned = back()
        return {
            "agents": len(self.agents),
            "back": len(returned),
            "last_back_s": max((a.back_at for a in returned), default=since) - since,
            "failures": dict(self.reconnect_failures),
            "failed_once_up": dict(Counter(reason for at, reason in self.reconnect_failed_at if at >= up_at)),
        }

    async def cmd_stats(self, msg: dict) -> dict:
        now = time.perf_counter()
        unanswered = sum(1 for t in self.pending.values() if now - t > 10)
        out = {
            "agents": len(self.agents),
            "open": sum(1 for a in self.agents if not a.closed),
            "counters": dict(self.counters),
            "hb_unanswered_10s": unanswered,
            "hb_rtt_p50_ms": (pct(self.hb_rtts, 50) or 0) * 1000,
            "hb_rtt_p99_ms": (pct(self.hb_rtts, 99) or 0) * 1000,
            "hb_rtt_n": len(self.hb_rtts),
        }
        if msg.get("reset"):
            self.hb_rtts = []
        return out

    async def cmd_close(self, msg: dict) -> dict:
        await self.cmd_hb_stop(msg)
        self.closing = True
        sem = asyncio.Semaphore(200)

        async def close(agent: Agent) -> None:
            async with sem:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(agent.ws.close(), timeout=10)

        await asyncio.gather(*(close(a) for a in self.agents if not a.closed))
        for task in list(self.tasks):
            task.cancel()
        closed = len(self.agents)
        self.agents = []
        self.pending.clear()
        self.closing = False
        return {"closed": closed}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            msg = json.loads(line)
            cmd = msg["cmd"]
            if cmd == "exit":
                await self.cmd_close(msg)
                self.reply({"ok": True})
                return
            try:
                result = await getattr(self, f"cmd_{cmd}")(msg)
            except Exception as exc:  # noqa: BLE001
                result = {"error": f"{type(exc).__name__}: {exc}"}
            self.reply(result)

    def reply(self, data: dict) -> None:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()


def main() -> None:
    raise_nofile()
    asyncio.run(Worker().run())


if __name__ == "__main__":
    main()
