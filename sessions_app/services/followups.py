"""The write path for follow-ups: scheduled by a technician or approved by the end user, reminded
once when due (console and e-mail), and opened as a new session linked to the earlier one.

Every function writes the change and its transcript entries in one transaction. Technicians'
writes bind their tenant (``acting_for``); the approval consequence runs in the prompt's tenant
(bound by its caller); the reminder sweep crosses tenants by name (``tenancy.system()``) and
binds each follow-up's tenant for its write.

Below: ``sessions`` (a follow-up opens a session). Above: ``approvals`` (an approved follow-up
prompt schedules one here).
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from bridge import notify
from caisey import tenancy
from caisey.actors import Actor, Party, actor_label, actor_person
from caisey.state_machine import transition_if
from caisey.transactions import retrying_atomic
from endpoints.access import acting_for
from sessions_app.kinds import TranscriptKind as K
from sessions_app.limits import REASON_MAX_CHARS
from sessions_app.models import (
    FOLLOW_UP_TRANSITIONS,
    FollowUp,
    FollowUpStatus,
    Prompt,
    SupportSession,
)
from sessions_app.services import locks
from sessions_app.services.sessions import SessionError, session_event, session_open
from sessions_app.services.transcript import transcript_append

log = logging.getLogger(__name__)


def _announce(follow_up: FollowUp, event: str) -> None:
    """Tell the tenant's console pages after commit (``follow_up.due`` raises the assigned
    technician's count in the nav: caisey/static/console/followups.js)."""
    notify.console_event(
        tenant_id=follow_up.tenant_id,
        event=event,
        payload={
            "follow_up_id": str(follow_up.pk),
            "session_id": str(follow_up.session_id),
            "due_at": follow_up.due_at.isoformat(),
            "status": follow_up.status,
            "assigned_to": follow_up.assigned_to.get_username(),
            "hostname": follow_up.endpoint.hostname,
            "note": follow_up.note,
        },
    )


def _schedule(
    *, session: SupportSession, at: datetime, note: str, assigned_to, by: str, prompt: Prompt | None = None
) -> FollowUp:
    note = note[:REASON_MAX_CHARS]
    # The session header keeps showing its latest follow-up.
    SupportSession.objects.filter(pk=session.pk).update(follow_up_at=at, follow_up_note=note)
    follow_up = FollowUp.objects.create(
        tenant_id=session.tenant_id,
        session=session,
        endpoint_id=session.endpoint_id,
        assigned_to=assigned_to,
        due_at=at,
        note=note,
        approved_prompt=prompt,
        status_changed_by=by,
    )
    data = {"at": at.isoformat(), "note": note, "follow_up": str(follow_up.pk)}
    if prompt is not None:
        data["approved_prompt"] = str(prompt.pk)
    transcript_append(session=session, kind=K.SESSION_FOLLOW_UP_SCHEDULED, actor=by, data=data)
    _announce(follow_up, "follow_up.scheduled")
    return follow_up


@retrying_atomic()
def follow_up_schedule(*, actor: Actor, session: SupportSession, at: datetime, note: str = "") -> FollowUp:
    """A technician schedules a follow-up of this session; it is theirs to be reminded of."""
    with acting_for(actor, session.tenant_id):
        if at <= timezone.now():
            raise SessionError("a follow-up must be in the future")
        return _schedule(
            session=session,
            at=at,
            note=note,
            assigned_to=actor_person(actor, doing="schedule a follow-up"),
            by=actor_label(actor),
        )


def follow_up_from_approval(*, prompt: Prompt) -> FollowUp:
    """The end user approved a follow-up session: it is scheduled for the technician who asked.
    In the caller's transaction, with the prompt's tenant bound. Once per prompt (a replayed
    approval finds the follow-up it made)."""
    existing = FollowUp.objects.filter(approved_prompt=prompt).first()
    if existing is not None:
        return existing
    assert prompt.follow_up_at is not None
    return _schedule(
        session=prompt.session,
        at=prompt.follow_up_at,
        note=prompt.detail,
        assigned_to=prompt.requested_by,
        by=prompt.state_changed_by,  # the party that reported the approval: the runtime or an approver
        prompt=prompt,
    )


@retrying_atomic()
def follow_up_open(*, actor: Actor, follow_up: FollowUp) -> SupportSession:
    """Open the follow-up: a new session on the same endpoint, linked to the earlier one (both
    transcripts say so). Any operator of the tenant may open it, early or late; once only."""
    with acting_for(actor, follow_up.tenant_id):
        locks.session_lock(session_id=follow_up.session_id, tenant_id=follow_up.tenant_id)
        follow_up = (
            FollowUp.objects.select_for_update(of=("self",)).select_related("session", "endpoint").get(pk=follow_up.pk)
        )
        if follow_up.status != FollowUpStatus.SCHEDULED:
            raise SessionError("this follow-up was already opened")
        earlier = follow_up.session
        reason = f"Follow-up of the session of {timezone.localtime(earlier.opened_at):%Y-%m-%d %H:%M}"
        if follow_up.note:
            reason += f": {follow_up.note}"
        session = session_open(actor=actor, endpoint=follow_up.endpoint, reason=reason[:REASON_MAX_CHARS])
        by = actor_label(actor)
        now = timezone.now()
        if not transition_if(
            follow_up,
            to=FollowUpStatus.OPENED,
            table=FOLLOW_UP_TRANSITIONS,
            updates={"opened_session": session, "opened_at": now, "status_changed_by": by},
        ):
            raise SessionError("this follow-up was already opened")
        transcript_append(
            session=session,
            kind=K.SESSION_FOLLOW_UP_OF,
            actor=by,
            data={
                "follow_up": str(follow_up.pk),
                "earlier_session": str(earlier.pk),
                "due_at": follow_up.due_at.isoformat(),
            },
        )
        transcript_append(
            session=earlier,
            kind=K.SESSION_FOLLOW_UP_OPENED,
            actor=by,
            data={"follow_up": str(follow_up.pk), "session": str(session.pk)},
        )
        session_event(
            earlier, "session.follow_up_opened", {"follow_up_id": str(follow_up.pk), "opened": str(session.pk)}
        )
        _announce(follow_up, "follow_up.opened")
        return session


# --- the reminder sweep (every tenant, by name) ------------------------------------------------


def _mail(follow_up: FollowUp) -> None:
    """The e-mail reminder, sent after the reminder is committed: at most once per follow-up (a
    failed send is logged, not retried; the console keeps showing the follow-up as due)."""
    email = follow_up.assigned_to.email
    if not email:
        return
    path = reverse("console:follow_up_list")
    url = f"{settings.CAISEY_PUBLIC_URL.rstrip('/')}{path}" if settings.CAISEY_PUBLIC_URL else path
    body = (
        f"A follow-up is due on {follow_up.endpoint.hostname} "
        f"({timezone.localtime(follow_up.due_at):%Y-%m-%d %H:%M %Z}).\n\n"
        f"{follow_up.note or 'No note.'}\n\nOpen it from your follow-ups: {url}\n"
    )
    try:
        send_mail(f"Follow-up due: {follow_up.endpoint.hostname}", body, settings.DEFAULT_FROM_EMAIL, [email])
    except Exception:  # the reminder stays on the console; the mail server's failure is logged
        log.exception("the reminder e-mail of follow-up %s could not be sent", follow_up.pk)


def follow_up_reminder_sweep() -> int:
    """Remind the assigned technician of each follow-up that fell due, once: a conditional update
    of ``reminded_at`` decides which sweep reminds (two sweeps at once remind once)."""
    now = timezone.now()
    reminded = 0
    with tenancy.system():
        due = list(
            FollowUp.objects.filter(status=FollowUpStatus.SCHEDULED, reminded_at__isnull=True, due_at__lte=now)
            .select_related("session", "endpoint", "assigned_to")
            .order_by("due_at")[:500]
        )
        for follow_up in due:
            with transaction.atomic(), tenancy.bind(follow_up.tenant_id):
                if not FollowUp.objects.filter(pk=follow_up.pk, reminded_at__isnull=True).update(reminded_at=now):
                    continue
                follow_up.reminded_at = now
                transcript_append(
                    session=follow_up.session,
                    kind=K.SESSION_FOLLOW_UP_DUE,
                    actor=actor_label(Party.SYSTEM),
                    data={
                        "follow_up": str(follow_up.pk),
                        "due_at": follow_up.due_at.isoformat(),
                        "reminded": follow_up.assigned_to.get_username(),
                        "email": bool(follow_up.assigned_to.email),
                    },
                )
                _announce(follow_up, "follow_up.due")
                transaction.on_commit(functools.partial(_mail, follow_up))
                reminded += 1
    return reminded
