"""Console forms of the review page: redact (one entry, or a fragment everywhere) and add a note.

Limits are the services' named constants (sessions_app/services/review.py), so a future API
validates the same way. ``RecordForm.cleaned()`` is how the record pages read a form: the
cleaned data, or ``Rejected`` with the first error as the technician's message.
"""

from __future__ import annotations

from typing import Any

from django import forms

from caisey.errors import Rejected
from sessions_app.services.review import FRAGMENT_MAX_LENGTH, NOTE_MAX_LENGTH


class RecordForm(forms.Form):
    """Base of the record pages' forms (incidents, review, sharing)."""

    def cleaned(self) -> dict[str, Any]:
        if not self.is_valid():
            errors = [message for messages in self.errors.values() for message in messages]
            raise Rejected(str(errors[0]) if errors else "the form is not valid")
        return self.cleaned_data


class RedactForm(RecordForm):
    """``scope=session``: the fragment everywhere; otherwise one entry, whole or the fragment in it."""

    scope = forms.ChoiceField(choices=[("entry", "entry"), ("session", "session")], required=False)
    entry = forms.IntegerField(required=False, min_value=0, error_messages={"invalid": "no such entry"})
    whole = forms.BooleanField(required=False)
    # Not stripped: the exact text is what gets redacted (a password may end with a space).
    fragment = forms.CharField(
        required=False,
        strip=False,
        max_length=FRAGMENT_MAX_LENGTH,
        error_messages={"max_length": f"the text to redact is limited to {FRAGMENT_MAX_LENGTH:,} characters"},
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        if data.get("scope") == "session":
            if not data.get("fragment", "").strip():
                raise forms.ValidationError("give the text to redact")
        else:
            if data.get("entry") is None:
                raise forms.ValidationError("choose the entry to redact")
            if not data.get("whole") and not data.get("fragment"):
                raise forms.ValidationError("give the text to redact, or redact the whole entry")
        return data


class NoteForm(RecordForm):
    text = forms.CharField(
        max_length=NOTE_MAX_LENGTH,
        error_messages={
            "required": "a note needs some text",
            "max_length": f"a note is limited to {NOTE_MAX_LENGTH:,} characters",
        },
    )
    entry = forms.IntegerField(required=False, min_value=0, error_messages={"invalid": "no such entry"})
