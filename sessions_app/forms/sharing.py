"""Console form creating a share link (for a session or an incident): who it is for, and its expiry.

Limits are the services' named constants (sessions_app/services/sharing.py): the expiry is a
number of days within MIN_EXPIRY..MAX_EXPIRY, the label at most LABEL_MAX_LENGTH characters.
"""

from __future__ import annotations

from datetime import timedelta

from django import forms

from sessions_app.forms.review import RecordForm
from sessions_app.services.sharing import LABEL_MAX_LENGTH, MAX_EXPIRY, MIN_EXPIRY

#: What the console offers (days, text); any number of days within the limits is accepted.
EXPIRY_CHOICES = [(1, "1 day"), (3, "3 days"), (7, "7 days"), (30, "30 days"), (90, "90 days")]
DEFAULT_EXPIRY_DAYS = 7


class ShareLinkForm(RecordForm):
    label = forms.CharField(
        required=False,
        max_length=LABEL_MAX_LENGTH,
        error_messages={"max_length": f"the label is limited to {LABEL_MAX_LENGTH} characters"},
    )
    expires_days = forms.FloatField(required=False, error_messages={"invalid": "the expiry must be a number of days"})

    def clean_expires_days(self) -> timedelta:
        days = self.cleaned_data.get("expires_days")
        expires_in = timedelta(days=DEFAULT_EXPIRY_DAYS if days is None else days)
        if not MIN_EXPIRY <= expires_in <= MAX_EXPIRY:
            raise forms.ValidationError(f"a share link expires within {MAX_EXPIRY.days} days")
        return expires_in
