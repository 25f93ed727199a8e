"""Console forms of incidents: create, set the status, write the summary.

Limits are the services' named constants (sessions_app/services/incidents.py).
"""

from __future__ import annotations

from typing import Any

from django import forms

from endpoints.models import ClientGroup
from sessions_app.forms.review import RecordForm
from sessions_app.forms.sessions import TicketField
from sessions_app.models import IncidentStatus
from sessions_app.services.incidents import SUMMARY_MAX_LENGTH, TITLE_MAX_LENGTH


class IncidentCreateForm(RecordForm):
    title = forms.CharField(
        max_length=TITLE_MAX_LENGTH,
        error_messages={
            "required": "an incident needs a title",
            "max_length": f"the title is limited to {TITLE_MAX_LENGTH} characters",
        },
    )
    ticket = TicketField()
    client_group: forms.ModelChoiceField[ClientGroup] = forms.ModelChoiceField(
        queryset=None,  # set per form: the scoped manager needs the bound tenant
        required=False,
        error_messages={"invalid_choice": "no such client"},
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The bound tenant's groups only (scoped manager), read when the form is validated.
        self.fields["client_group"].queryset = ClientGroup.objects.all()  # type: ignore[attr-defined]


class IncidentTicketForm(RecordForm):
    ticket = TicketField()


class IncidentStatusForm(RecordForm):
    status = forms.ChoiceField(
        choices=IncidentStatus.choices,
        error_messages={"required": "choose a status", "invalid_choice": "unknown status %(value)r"},
    )


class IncidentSummaryForm(RecordForm):
    summary = forms.CharField(
        required=False,
        max_length=SUMMARY_MAX_LENGTH,
        error_messages={"max_length": f"the summary is limited to {SUMMARY_MAX_LENGTH:,} characters"},
    )
