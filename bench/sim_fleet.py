"""The demo's simulated fleet: a few agents speaking the real protocol, no machine behind them.

Started by `manage.py demo` (caisey/demo_fleet.py), which enrolled each one through the real
enrollment API with a *simulated* enrollment token (so the console marks them "simulated") and
wrote their identities to a file. The agents are bench/loadgen.py's (hello -> welcome, heartbeats
at the cadence the server asks, every server event acknowledged by id, actions answered at once),
one asyncio process for all of them:

- ``link_delay`` > 0: a slow link; every frame from the server is handled that many seconds late,
  so its acknowledgements arrive late and the server's own health figures call the path degraded;
- ``leave``: connects once (hello -> welcome) and goes away, so the endpoint is offline and what
  is asked of it waits in the outbox.

The others stay connected, reconnecting as caisey-agent does when the server restarts.

    python bench/sim_fleet.py --url ws://127.0.0.1:8000/ws/agent/ --agents FILE
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import Agent, Worker  # noqa: E402  (bench/ is this script's folder)

AGENT_VERSION = "simulated-1"


async def run(url: str, specs: list[dict]) -> None:
    worker = Worker()
    worker.agent_version = AGENT_VERSION
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stay, leave = [], []
    for spec in specs:
        agent = Agent(
            spec["endpoint_id"],
            spec["credential"],
            machine={"hostname": spec["hostname"], "os": spec.get("os", "windows")},
            link_delay=float(spec.get("link_delay", 0.0)),
        )
        (leave if spec.get("leave") else stay).append(agent)
    for agent in [*stay, *leave]:
        await connect_until_welcomed(worker, agent, url, stop)
        if stop.is_set():
            return
    for agent in leave:
        await agent.ws.close()
        print(f"{agent.machine['hostname']}: connected once, now away", flush=True)
    worker.agents = stay
    for agent in stay:
        worker._spawn(worker.reader(agent))
        print(f"{agent.machine['hostname']}: connected (link delay {agent.link_delay:g} s)", flush=True)
    # From now on a dropped agent reconnects (a restarted server) with caisey-agent's backoff.
    await worker.cmd_reconnect_mode({"url": url, "ping_interval": 20, "base": 1.0, "cap": 30.0})
    await worker.cmd_hb_start({})
    await stop.wait()
    await worker.cmd_close({})


async def connect_until_welcomed(worker: Worker, agent: Agent, url: str, stop: asyncio.Event) -> None:
    delay = 0.5
    while not stop.is_set():
        try:
            await worker.handshake(agent, url, 20)
            return
        except Exception as exc:  # noqa: BLE001  (the server may still be starting: retried, reported)
            print(f"{agent.machine['hostname']}: connect failed ({exc!r}); retrying", flush=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the agent WebSocket URL, e.g. ws://127.0.0.1:8000/ws/agent/")
    parser.add_argument("--agents", required=True, type=Path, help="JSON list of the agents (caisey/demo_fleet.py)")
    args = parser.parse_args()
    asyncio.run(run(args.url, json.loads(args.agents.read_text())))


if __name__ == "__main__":
    main()
