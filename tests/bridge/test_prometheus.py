"""/metrics with a bearer token: the database's figures and the bridge's counters, one process or several."""

from __future__ import annotations

import pytest

from bridge import metrics

pytestmark = pytest.mark.django_db

TOKEN = "metrics-test-token-0123456789"


def scrape(client) -> str:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    return response.content.decode()


def test_one_process_reports_its_own_counters(client, settings, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    settings.CAISEY = {**settings.CAISEY, "METRICS_TOKEN": TOKEN}
    before = metrics.agent_connects._value.get()
    metrics.agent_connects.inc()
    body = scrape(client)
    assert "caisey_bridge_queue_depth" in body
    assert f"caisey_agent_connects_total {before + 1}" in body


def test_without_the_token_nothing_is_shown(client, settings):
    settings.CAISEY = {**settings.CAISEY, "METRICS_TOKEN": TOKEN}
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403


def test_under_serve_the_counters_of_every_process_are_summed(client, settings, monkeypatch, tmp_path):
    """What each process of `manage.py serve` writes to PROMETHEUS_MULTIPROC_DIR (here: files as two
    other processes left them) is summed by whichever process answers."""
    from prometheus_client.values import MultiProcessValue

    settings.CAISEY = {**settings.CAISEY, "METRICS_TOKEN": TOKEN}
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    for pid, count in ((101, 3), (202, 4)):
        value = MultiProcessValue(process_identifier=lambda pid=pid: pid)(
            "counter", "caisey_agent_connects_total", "caisey_agent_connects_total", [], [], "", {}
        )
        value.inc(count)
    assert "caisey_agent_connects_total 7.0" in scrape(client)
