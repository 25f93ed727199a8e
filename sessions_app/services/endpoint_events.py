"""What happens to an endpoint outside a session, recorded in the sessions open on it."""

from __future__ import annotations

import uuid

from django.db import transaction

from caisey.actors import Party, actor_label
from endpoints.models import Endpoint
from sessions_app.kinds import TranscriptKind as K
from sessions_app.models import SessionStatus, SupportSession
from sessions_app.services.transcript import transcript_append


@transaction.atomic
def sessions_record_reenrollment(*, endpoint_id: uuid.UUID) -> int:
    """Append ``endpoint.reenrolled`` to each open session of the endpoint: its identity was replaced
    (a new credential, the old connection closed). Runs in the re-enrollment's transaction, in the
    endpoint's tenant; returns how many sessions recorded it."""
    endpoint = Endpoint.objects.select_related("enrolled_with").get(pk=endpoint_id)
    token = endpoint.enrolled_with
    sessions = list(SupportSession.objects.filter(endpoint_id=endpoint_id, status=SessionStatus.OPEN))
    for session in sessions:
        transcript_append(
            session=session,
            kind=K.ENDPOINT_REENROLLED,
            actor=actor_label(Party.AGENT),
            data={
                "hostname": endpoint.hostname,
                "enrollment_token": token.note if token is not None and token.note else "",
                "credential_rotated_at": endpoint.credential_rotated_at.isoformat()
                if endpoint.credential_rotated_at
                else None,
                "previous_connection": "closed",
            },
        )
    return len(sessions)
