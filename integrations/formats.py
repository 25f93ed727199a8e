"""The bodies a destination receives: the signed JSON envelope as is, or a chat message shaped for
Slack's or Microsoft Teams' incoming webhooks (prompts that wait, escalations, endpoints that went
offline during an open session). Rendered at send time from the stored envelope."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.urls import reverse

from integrations.models import WebhookFormat

_TITLES = {
    "prompt.issued": "Approval waiting",
    "prompt.escalated": "Approval escalated to the client",
    "endpoint.offline": "Endpoint offline",
    "webhook.test": "Caisey test message",
}


def _session_url(payload: dict) -> str | None:
    base = getattr(settings, "CAISEY_PUBLIC_URL", "")
    session = (payload.get("data") or {}).get("session") or {}
    if not base or not session.get("id"):
        return None
    return base.rstrip("/") + reverse("console:session_detail", args=[session["id"]])


def summary(payload: dict) -> tuple[str, str, list[tuple[str, str]]]:
    """(title, sentence, facts) of an event, in words."""
    data = payload.get("data") or {}
    detail = data.get("detail") or {}
    host = (data.get("endpoint") or {}).get("hostname") or "an endpoint"
    kind = payload.get("type", "")
    title = _TITLES.get(kind, kind)
    if kind == "prompt.issued":
        sentence = (
            f"{host}: \u201c{detail.get('title', 'a prompt')}\u201d waits for an answer until {detail.get('deadline')}."
        )
    elif kind == "prompt.escalated":
        sentence = f"{host}: a prompt was sent to {detail.get('to', 'the approver')} for a decision."
    elif kind == "endpoint.offline":
        during = " while a session was open" if data.get("session") else ""
        sentence = f"{host} went offline{during}."
    elif kind == "webhook.test":
        sentence = "This destination is set up: Caisey can reach it."
    else:
        sentence = f"{host}: {kind}"
    facts = [("Endpoint", host)]
    if (data.get("session") or {}).get("reason"):
        facts.append(("Session", data["session"]["reason"]))
    facts.append(("Event", payload.get("id", "")))
    return title, sentence, facts


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack(payload: dict) -> dict[str, Any]:
    title, sentence, facts = summary(payload)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(sentence)[:3000]}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{name}*\n{_slack_escape(value)[:1900]}"} for name, value in facts],
        },
    ]
    url = _session_url(payload)
    if url:
        blocks.append(
            {
                "type": "actions",
                "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open session"}, "url": url}],
            }
        )
    return {"text": f"{title}: {sentence}", "blocks": blocks}


def teams(payload: dict) -> dict[str, Any]:
    """An Adaptive Card in a message: what both Teams' Workflows webhooks and its older incoming
    webhook connectors accept."""
    title, sentence, facts = summary(payload)
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": True},
            {"type": "TextBlock", "text": sentence, "wrap": True},
            {"type": "FactSet", "facts": [{"title": name, "value": value} for name, value in facts]},
        ],
    }
    url = _session_url(payload)
    if url:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open session", "url": url}]
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def render(fmt: str, payload: dict) -> bytes:
    """The exact bytes sent (and signed)."""
    if fmt == WebhookFormat.SLACK:
        body: dict = slack(payload)
    elif fmt == WebhookFormat.TEAMS:
        body = teams(payload)
    else:
        body = payload
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str).encode()
