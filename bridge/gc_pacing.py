"""Garbage-collector pacing for the process that holds the agents' sockets.

With thousands of agents connected Daphne holds over a million Python objects, and every full
(generation 2) collection walks all of them while the event loop stands still: 1.1-1.7 s at
5,000 agents, which was the whole of the heartbeat p99 (bench/README.md, "What limits", 8).
Objects that live as long as their socket are taken out of the collector's way with
gc.freeze(); every THAW_EVERY freezes everything is thawed and collected once, so reference
cycles left behind by closed sockets are still freed.
"""

from __future__ import annotations

import asyncio
import gc

from django.conf import settings

THAW_EVERY = 12

_task: asyncio.Task | None = None


def ensure_started() -> None:
    """Start the pacer on this event loop (once); CAISEY_GC_FREEZE_EVERY_S=0 turns it off."""
    global _task
    every = settings.CAISEY["GC_FREEZE_EVERY_S"]
    if every <= 0:
        return
    loop = asyncio.get_running_loop()
    if _task is None or _task.done() or _task.get_loop() is not loop:
        _task = loop.create_task(_pace(every))


async def _pace(every: float) -> None:
    freezes = 0
    while True:
        await asyncio.sleep(every)
        freezes += 1
        if freezes % THAW_EVERY == 0:
            gc.unfreeze()
            gc.collect()
        gc.freeze()
