"""The agent socket's garbage-collector pacer freezes long-lived objects and thaws them now and then."""

from __future__ import annotations

import asyncio
import gc

import pytest

from bridge import gc_pacing


@pytest.mark.asyncio
async def test_pacer_freezes_then_thaws_and_collects(settings, monkeypatch):
    settings.CAISEY = {**settings.CAISEY, "GC_FREEZE_EVERY_S": 0.01}
    monkeypatch.setattr(gc_pacing, "THAW_EVERY", 3)
    calls = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(gc, "unfreeze", lambda: calls.append("unfreeze"))
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append("collect") or 0)
    gc_pacing.ensure_started()
    task = gc_pacing._task
    gc_pacing.ensure_started()  # a second socket does not start a second pacer
    assert gc_pacing._task is task
    try:
        for _ in range(200):
            if calls.count("freeze") >= 3:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert calls[:5] == ["freeze", "freeze", "unfreeze", "collect", "freeze"]


@pytest.mark.asyncio
async def test_pacer_off_when_configured_so(settings):
    settings.CAISEY = {**settings.CAISEY, "GC_FREEZE_EVERY_S": 0}
    gc_pacing._task = None
    gc_pacing.ensure_started()
    assert gc_pacing._task is None
