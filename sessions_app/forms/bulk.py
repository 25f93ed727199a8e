"""The console's bulk-run form: the same limits as the API's ``BulkRunIn``."""

from __future__ import annotations

from django import forms

from sessions_app.forms.sessions import ConsoleForm, action_params_from
from sessions_app.limits import REASON_MAX_CHARS
from sessions_app.models import WakeChoice


class BulkRunForm(ConsoleForm):
    """The kind and its parameters, the endpoints chosen (checkboxes ``endpoint``) or a client
    group (``group``), and why. Which endpoints qualify is ``selectors.bulk.bulk_run_endpoints``'s
    rule, the API's too; the endpoint count limit is enforced there."""

    kind = forms.CharField(max_length=64, required=False)
    group = forms.CharField(max_length=200, required=False)
    reason = forms.CharField(max_length=REASON_MAX_CHARS, required=False)
    wake = forms.ChoiceField(
        choices=WakeChoice.choices,
        required=False,
        error_messages={"invalid_choice": f"wake must be one of: {', '.join(WakeChoice.values)}"},
    )

    def wake_choice(self) -> str:
        return self.valid_data()["wake"] or WakeChoice.NOW

    def endpoint_ids(self) -> list[str]:
        return self.data.getlist("endpoint")

    def params(self) -> dict:
        return action_params_from(self.data, self.valid_data()["kind"])
