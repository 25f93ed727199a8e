"""The console's runbook forms. Steps are written one per line, ``kind name=value ...`` (a value
with spaces in quotes, as in a shell: ``shell command="Restart-Service Spooler" shell=powershell``);
the service validates them against the catalogue as the API's single requests are."""

from __future__ import annotations

import shlex
from typing import Any

from django import forms

from caisey.errors import Rejected
from sessions_app.forms.sessions import ConsoleForm
from sessions_app.limits import REASON_MAX_CHARS
from sessions_app.limits import RUNBOOK_DESCRIPTION_MAX_CHARS as DESCRIPTION_MAX_CHARS
from sessions_app.limits import RUNBOOK_NAME_MAX_CHARS as NAME_MAX_CHARS

STEPS_MAX_CHARS = 20_000


def steps_parse(text: str) -> list[dict[str, Any]]:
    """``kind name=value ...`` per line (blank lines and ``#`` comments skipped) into steps."""
    steps = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise Rejected(f"line {number}: {exc}") from None
        params: dict[str, str] = {}
        for word in words[1:]:
            name, sep, value = word.partition("=")
            if not sep or not name:
                raise Rejected(f"line {number}: write each parameter as name=value, not {word!r}")
            params[name] = value
        steps.append({"kind": words[0], "params": params})
    return steps


def steps_text(steps: list[dict[str, Any]]) -> str:
    """Steps back in the form's syntax (the edit form starts from the latest version)."""
    return "\n".join(
        " ".join([shlex.quote(step["kind"]), *(f"{k}={shlex.quote(str(v))}" for k, v in step["params"].items())])
        for step in steps
    )


class RunbookForm(ConsoleForm):
    name = forms.CharField(max_length=NAME_MAX_CHARS, required=False)
    description = forms.CharField(max_length=DESCRIPTION_MAX_CHARS, required=False)
    steps = forms.CharField(max_length=STEPS_MAX_CHARS, required=False)

    def parsed_steps(self) -> list[dict[str, Any]]:
        return steps_parse(self.valid_data()["steps"])


class RunbookRunForm(ConsoleForm):
    """Run version ``version`` (the one the page showed) on an endpoint, or across a client group."""

    version = forms.IntegerField(min_value=1, error_messages={"required": "which version to run"})
    endpoint = forms.UUIDField(required=False, error_messages={"invalid": "no such endpoint"})
    group = forms.CharField(max_length=200, required=False)
    reason = forms.CharField(max_length=REASON_MAX_CHARS, required=False)

    def clean(self):
        data = super().clean()
        if bool(data.get("endpoint")) == bool(data.get("group")):
            raise forms.ValidationError("choose one endpoint or one client group")
        return data
