"""Console forms for sessions and actions: the limits are the services' own constants, the same
ones the API's serializers use (sessions_app/api.py), so console and API refuse alike."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.http import QueryDict
from django.utils import timezone

from caisey.errors import Rejected
from caisey_agent.protocol import ACTION_KINDS
from endpoints.tickets import TICKET_MAX_LENGTH, TicketRejected, ticket_clean
from sessions_app.limits import MAX_BATCH, MAX_EXPIRY, NOTE_MAX_CHARS, REASON_MAX_CHARS
from sessions_app.models import WakeChoice

#: The console asks for the expiry in hours; the API in seconds. Same bound.
MAX_EXPIRY_HOURS = MAX_EXPIRY / timedelta(hours=1)
EXPIRY_MESSAGE = f"the expiry must be between a minute and {MAX_EXPIRY.days} days"


class ConsoleForm(forms.Form):
    """A form whose refusal is a domain error (shown on the page by the console's error handling)."""

    def valid_data(self) -> dict[str, Any]:
        if not self.is_valid():
            errors = next(iter(self.errors.values()))
            raise Rejected(errors[0])
        return self.cleaned_data


def action_params_from(post: QueryDict, kind: str) -> dict[str, Any]:
    """The catalogue parameters of ``kind`` from the per-kind inputs (``<kind>__<param>``);
    the service checks them against the catalogue, as for the API."""
    spec = ACTION_KINDS.get(kind)
    if spec is None:
        return {}
    return {p.name: post.get(f"{kind}__{p.name}", "") for p in spec.params}


class TicketField(forms.CharField):
    """A PSA ticket reference, checked by the services' rule (endpoints.tickets.ticket_clean)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("max_length", TICKET_MAX_LENGTH)
        kwargs.setdefault(
            "error_messages", {"max_length": f"a ticket reference is limited to {TICKET_MAX_LENGTH} characters"}
        )
        super().__init__(**kwargs)

    def clean(self, value: Any) -> str:
        try:
            return ticket_clean(super().clean(value))
        except TicketRejected as exc:
            raise forms.ValidationError(str(exc)) from None


class SessionOpenForm(ConsoleForm):
    reason = forms.CharField(max_length=REASON_MAX_CHARS, required=False)
    ticket = TicketField()
    # Ticked: the endpoint keeps its lazy cadence (work queued to wait for its check-ins).
    no_wake = forms.BooleanField(required=False)


class TicketForm(ConsoleForm):
    ticket = TicketField()


class SessionCloseForm(ConsoleForm):
    reason = forms.CharField(max_length=REASON_MAX_CHARS, required=False)


class NoteForm(ConsoleForm):
    text = forms.CharField(
        max_length=NOTE_MAX_CHARS,
        required=False,
        error_messages={"max_length": f"a note is limited to {NOTE_MAX_CHARS:,} characters"},
    )


class ActionRunForm(ConsoleForm):
    kind = forms.CharField(max_length=64, required=False)
    expires_hours = forms.FloatField(required=False, error_messages={"invalid": "the expiry must be a number of hours"})
    wake = forms.ChoiceField(
        choices=WakeChoice.choices,
        required=False,
        error_messages={"invalid_choice": f"wake must be one of: {', '.join(WakeChoice.values)}"},
    )

    def wake_choice(self) -> str:
        return self.valid_data()["wake"] or WakeChoice.NOW

    def clean_expires_hours(self) -> float | None:
        hours = self.cleaned_data.get("expires_hours")
        if hours is not None and not 0 < hours <= MAX_EXPIRY_HOURS:
            raise forms.ValidationError(EXPIRY_MESSAGE)
        return hours

    def expires_in(self) -> timedelta | None:
        hours = self.valid_data()["expires_hours"]
        return timedelta(hours=hours) if hours else None

    def params(self) -> dict[str, Any]:
        return action_params_from(self.data, self.valid_data()["kind"])


class BatchForm(ConsoleForm):
    """A batch from the queued-steps form: lines of ``kind key=value ...``."""

    steps = forms.CharField(required=False)

    def clean_steps(self) -> list[tuple[str, dict[str, str]]]:
        items = []
        for line in self.cleaned_data.get("steps", "").splitlines():
            if not line.strip():
                continue
            kind, *pairs = line.split()
            params = {}
            for pair in pairs:
                if "=" not in pair:
                    raise forms.ValidationError(f"expected key=value, got {pair!r}")
                key, value = pair.split("=", 1)
                params[key] = value
            items.append((kind, params))
        if len(items) > MAX_BATCH:
            raise forms.ValidationError(f"a batch holds at most {MAX_BATCH} actions")
        return items

    def items(self) -> list[tuple[str, dict[str, str]]]:
        return self.valid_data()["steps"]


class FollowUpForm(ConsoleForm):
    """A date and time (a datetime-local input is naive: read in the server's zone) and a note."""

    at = forms.DateTimeField(
        error_messages={"required": "give a date and time", "invalid": "give a date and time"},
    )
    note = forms.CharField(max_length=REASON_MAX_CHARS, required=False)

    def clean_at(self) -> datetime:
        value = self.cleaned_data["at"]
        return timezone.make_aware(value) if timezone.is_naive(value) else value
