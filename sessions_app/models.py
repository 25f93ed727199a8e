"""The domain: support sessions, the actions run in them, and the append-only transcript."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from caisey.tenancy import TenantScopedManager
from endpoints.models import Endpoint, Presence, Tenant


class SessionStatus(models.TextChoices):
    OPEN = "open", "Open"
    CLOSED = "closed", "Closed"


SESSION_TRANSITIONS: dict[str, frozenset[str]] = {
    SessionStatus.OPEN: frozenset({SessionStatus.CLOSED}),
    SessionStatus.CLOSED: frozenset(),
}


class SupportSession(models.Model):
    """One technician's troubleshooting of one endpoint. Several may be open on one endpoint."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="sessions")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.PROTECT, related_name="sessions")
    opened_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reason = models.CharField(max_length=500, blank=True, help_text="Why: a ticket number, the symptom.")
    # The PSA ticket the work belongs to (endpoints/tickets.py validates it); set at open, changed
    # by sessions.session_set_ticket, which records each change in the transcript.
    ticket = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=10, choices=SessionStatus.choices, default=SessionStatus.OPEN)
    status_changed_by = models.CharField(max_length=200, blank=True)
    opened_at = models.DateTimeField(auto_now_add=True)
    opened_offline = models.BooleanField(default=False, help_text="The endpoint was offline when it opened.")
    closed_at = models.DateTimeField(null=True, blank=True)
    close_reason = models.CharField(max_length=500, blank=True)
    last_activity_at = models.DateTimeField(auto_now_add=True)
    follow_up_at = models.DateTimeField(null=True, blank=True)
    follow_up_note = models.CharField(max_length=500, blank=True)
    # The endpoint's connectivity as the record last stated it (sessions_app/connectivity.py).
    connectivity = models.CharField(max_length=10, choices=Presence.choices, blank=True)
    # The transcript's length and last hash, so that removing its last entries is detected too.
    transcript_length = models.PositiveIntegerField(default=0)
    transcript_head = models.CharField(max_length=64, blank=True)

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    class Meta:
        ordering = ["-opened_at"]
        indexes = [models.Index(fields=["endpoint", "status"]), models.Index(fields=["tenant", "status", "opened_at"])]

    def __str__(self) -> str:
        return f"{self.endpoint} by {self.opened_by} ({self.status})"


class ActionStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    DISPATCHED = "dispatched", "Dispatched"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    TIMED_OUT = "timed_out", "Timed out"
    CANCELLED = "cancelled", "Cancelled"
    EXPIRED = "expired", "Expired"
    FAILED_TO_DELIVER = "failed_to_deliver", "Failed to deliver"


_S = ActionStatus
ACTION_TRANSITIONS: dict[str, frozenset[str]] = {
    # Waiting in the outbox (the endpoint may be away): delivered, given up, or stopped.
    _S.QUEUED: frozenset(
        {
            _S.DISPATCHED,
            _S.RUNNING,
            _S.SUCCEEDED,
            _S.FAILED,
            _S.TIMED_OUT,
            _S.CANCELLED,
            _S.EXPIRED,
            _S.FAILED_TO_DELIVER,
            _S.AWAITING_APPROVAL,
        }
    ),
    _S.AWAITING_APPROVAL: frozenset({_S.QUEUED, _S.CANCELLED, _S.EXPIRED}),
    _S.DISPATCHED: frozenset({_S.RUNNING, _S.SUCCEEDED, _S.FAILED, _S.TIMED_OUT, _S.CANCELLED}),
    _S.RUNNING: frozenset({_S.SUCCEEDED, _S.FAILED, _S.TIMED_OUT, _S.CANCELLED}),
    _S.FAILED_TO_DELIVER: frozenset(
        {_S.QUEUED, _S.CANCELLED, _S.DISPATCHED, _S.RUNNING, _S.SUCCEEDED, _S.FAILED, _S.TIMED_OUT}
    ),
    _S.SUCCEEDED: frozenset(),
    _S.FAILED: frozenset(),
    _S.TIMED_OUT: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.EXPIRED: frozenset(),
}
ACTION_FINAL = frozenset({_S.SUCCEEDED, _S.FAILED, _S.TIMED_OUT, _S.CANCELLED, _S.EXPIRED})
ACTION_LIVE = frozenset({_S.QUEUED, _S.DISPATCHED, _S.RUNNING})


class WakeChoice(models.TextChoices):
    """Whether an action wakes its endpoint (active cadence, sent at once) or waits for the
    endpoint's next check-in at the cadence it has (lazy: every HEARTBEAT_LAZY_S), leaving it resting."""

    NOW = "now", "Wake the endpoint now"
    WAIT = "wait", "Run at the endpoint's next check-in, without waking it"


class Batch(models.Model):
    """Several actions sent together, run in order, covered by one approval where needed."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    session = models.ForeignKey(SupportSession, on_delete=models.CASCADE, related_name="batches")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    # The runbook version this batch ran, when it was a runbook's (also in the transcript).
    runbook_version = models.ForeignKey(
        "RunbookVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="batches"
    )

    objects = TenantScopedManager()
    all_tenants = models.Manager()


class Runbook(models.Model):
    """A tenant's named, ordered list of catalogue actions (an outage checklist). What it holds
    lives in its versions: editing adds a version, and the versions already written never change."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=200)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="runbook_name_unique_in_tenant")]


class ImmutableRow(Exception):
    """A row that is written once (a runbook version) was asked to change."""


class RunbookVersion(models.Model):
    """One version of a runbook: its steps ``[{"kind": ..., "params": {...}}]``, validated against
    the catalogue when written. Written once: ``save`` refuses an update, ``delete`` refuses."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    runbook = models.ForeignKey(Runbook, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    name = models.CharField(max_length=200, help_text="The runbook's name when this version was written.")
    description = models.TextField(blank=True)
    steps = models.JSONField(default=list)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    class Meta:
        ordering = ["runbook", "-number"]
        constraints = [models.UniqueConstraint(fields=["runbook", "number"], name="runbook_version_number_unique")]

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ImmutableRow("a runbook version never changes: edit the runbook to write a new version")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ImmutableRow("a runbook version is kept: runs name it")


class BulkRun(models.Model):
    """One diagnostic across many endpoints, with one combined results view."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=40)
    params = models.JSONField(default=dict)
    reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    # A re-run of the endpoints an earlier run failed on, timed out on or never reached.
    rerun_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns")
    # A runbook's run across endpoints: each endpoint gets the version's steps as a batch.
    runbook_version = models.ForeignKey(
        RunbookVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="bulk_runs"
    )

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    class Meta:
        ordering = ["-created_at"]


class Action(models.Model):
    """One diagnostic or command on the session's endpoint."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    session = models.ForeignKey(SupportSession, on_delete=models.CASCADE, related_name="actions")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.PROTECT, related_name="actions")
    batch = models.ForeignKey(Batch, null=True, blank=True, on_delete=models.CASCADE, related_name="actions")
    batch_position = models.PositiveIntegerField(default=0)
    bulk_run = models.ForeignKey(BulkRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="actions")
    kind = models.CharField(max_length=40)
    category = models.CharField(max_length=20)
    params = models.JSONField(default=dict)  # secret parameters as protocol.SECRET_MASK
    # The secret parameters, sealed (caisey.secretbox, ACTION_SECRETS): {name: sealed}. Wiped ({}) when
    # the action is final (actions._move); never shown, exported or sent anywhere but in action.run.
    secrets = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=ActionStatus.choices, default=ActionStatus.QUEUED)
    status_changed_by = models.CharField(max_length=200, blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Queued for an offline endpoint until then.")
    timeout_s = models.FloatField()
    output_limit = models.PositiveIntegerField()
    outbox_id = models.CharField(max_length=32, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    output_bytes = models.PositiveIntegerField(default=0)
    output_truncated = models.BooleanField(default=False)
    conditions_at_dispatch = models.JSONField(null=True, blank=True)
    conditions_at_completion = models.JSONField(null=True, blank=True)
    # Wake or wait (WakeChoice); woken_at: when a technician woke the endpoint for a waiting action.
    wake = models.CharField(max_length=10, choices=WakeChoice.choices, default=WakeChoice.NOW)
    woken_at = models.DateTimeField(null=True, blank=True)
    # The expired request this one runs again, with the approval recorded for it (a decision made
    # on the endpoint before the deadline that reached the server after it).
    rerun_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns")
    # A result the agent reported after the action had ended (given up while its endpoint was
    # unreachable, or cancelled): kept and shown, never reviving the state.
    late_result = models.JSONField(null=True, blank=True)

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["session", "created_at"]), models.Index(fields=["status", "deadline_at"])]

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    @property
    def is_final(self) -> bool:
        return self.status in ACTION_FINAL


class ActionOutput(models.Model):
    """One chunk of streamed output; (action, seq) is unique so replays add nothing."""

    action = models.ForeignKey(Action, on_delete=models.CASCADE, related_name="chunks")
    seq = models.PositiveIntegerField()
    stream = models.CharField(max_length=10)
    data = models.TextField()
    received_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedManager(tenant_field="action__tenant")
    all_tenants = models.Manager()

    class Meta:
        ordering = ["seq"]
        constraints = [models.UniqueConstraint(fields=["action", "seq"], name="output_chunk_once")]


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionError("transcript entries are append-only: write a correction entry instead")

    def delete(self):
        raise PermissionError("transcript entries are append-only and are never deleted")


class AppendOnlyManager(TenantScopedManager.from_queryset(AppendOnlyQuerySet)):
    pass


class TranscriptEntry(models.Model):
    """One event of a session's durable record. Never updated, never deleted.

    ``index`` is monotonic per session; ``hash`` chains each entry to the one
    before it: an HMAC-SHA256, under the chain key named by ``key_id``, of the previous hash and
    this entry's canonical content. The keys live outside the database (settings), so someone who
    can write the database can neither edit, remove nor rebuild a chain unnoticed by
    ``verify_transcripts``. An entry with no ``key_id`` was hashed with plain SHA-256 (before keys).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    session = models.ForeignKey(SupportSession, on_delete=models.PROTECT, related_name="transcript")
    index = models.PositiveIntegerField()
    kind = models.CharField(max_length=40)
    actor = models.CharField(max_length=200, help_text="Who caused it: user:<name>, agent, bridge, system, approver.")
    at = models.DateTimeField()
    action = models.ForeignKey(Action, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    data = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)
    key_id = models.CharField(max_length=40, blank=True, default="")

    objects = AppendOnlyManager()
    all_tenants = models.Manager.from_queryset(AppendOnlyQuerySet)()

    class Meta:
        ordering = ["session", "index"]
        constraints = [models.UniqueConstraint(fields=["session", "index"], name="transcript_index_once")]
        indexes = [models.Index(fields=["tenant", "at"])]

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise PermissionError("transcript entries are append-only: write a correction entry instead")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("transcript entries are append-only and are never deleted")


class PromptState(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered to the endpoint"
    ACKNOWLEDGED = "acknowledged", "Seen by the user"
    APPROVED = "approved", "Approved"
    DENIED = "denied", "Denied"
    EXPIRED = "expired", "Expired unanswered"
    FAILED_TO_DELIVER = "failed_to_deliver", "Could not reach the endpoint"
    CANCELLED = "cancelled", "Cancelled"
    SUPERSEDED = "superseded", "Superseded"


_P = PromptState
PROMPT_TRANSITIONS: dict[str, frozenset[str]] = {
    # A runtime report that it holds the prompt, or a decision, is proof of delivery.
    _P.PENDING: frozenset(
        {
            _P.DELIVERED,
            _P.ACKNOWLEDGED,
            _P.APPROVED,
            _P.DENIED,
            _P.EXPIRED,
            _P.FAILED_TO_DELIVER,
            _P.CANCELLED,
            _P.SUPERSEDED,
        }
    ),
    _P.DELIVERED: frozenset({_P.ACKNOWLEDGED, _P.APPROVED, _P.DENIED, _P.EXPIRED, _P.CANCELLED, _P.SUPERSEDED}),
    _P.ACKNOWLEDGED: frozenset({_P.APPROVED, _P.DENIED, _P.EXPIRED, _P.CANCELLED, _P.SUPERSEDED}),
    _P.FAILED_TO_DELIVER: frozenset(
        {_P.PENDING, _P.DELIVERED, _P.ACKNOWLEDGED, _P.APPROVED, _P.DENIED, _P.EXPIRED, _P.CANCELLED, _P.SUPERSEDED}
    ),
    # A decision made before the deadline is honoured even when it arrives after it.
    _P.EXPIRED: frozenset({_P.APPROVED, _P.DENIED}),
    _P.APPROVED: frozenset(),
    _P.DENIED: frozenset(),
    _P.CANCELLED: frozenset(),
    _P.SUPERSEDED: frozenset(),
}
PROMPT_OPEN = frozenset({_P.PENDING, _P.DELIVERED, _P.ACKNOWLEDGED, _P.FAILED_TO_DELIVER})
PROMPT_ENDED = frozenset({_P.APPROVED, _P.DENIED, _P.EXPIRED, _P.CANCELLED, _P.SUPERSEDED})


class PromptParty(models.TextChoices):
    CONSOLE = "console", "Console"
    BRIDGE = "bridge", "Bridge"
    RUNTIME = "runtime", "Endpoint runtime"
    APPROVER = "approver", "Designated approver"
    SYSTEM = "system", "System (deadline)"


class Prompt(models.Model):
    """An approval prompt: the console is the ledger, the runtime holds the user's view of it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    session = models.ForeignKey(SupportSession, on_delete=models.CASCADE, related_name="prompts")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.PROTECT, related_name="prompts")
    # What it authorises: one action, a batch (its first action is `action`), or a follow-up session.
    action = models.ForeignKey(Action, null=True, blank=True, on_delete=models.SET_NULL, related_name="prompts")
    batch = models.ForeignKey(Batch, null=True, blank=True, on_delete=models.SET_NULL, related_name="prompts")
    follow_up_at = models.DateTimeField(null=True, blank=True)
    title = models.CharField(max_length=200)
    detail = models.TextField()
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    state = models.CharField(max_length=20, choices=PromptState.choices, default=PromptState.PENDING)
    state_changed_by = models.CharField(max_length=20, choices=PromptParty.choices, default=PromptParty.CONSOLE)
    created_at = models.DateTimeField(auto_now_add=True)
    deadline_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)
    seen_at = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True, help_text="When the user decided (their clock).")
    decided_by = models.CharField(max_length=200, blank=True)
    outbox_id = models.CharField(max_length=32, blank=True)
    superseded_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    escalated_at = models.DateTimeField(null=True, blank=True)
    allow_escalation = models.BooleanField(default=False)
    # When the runtime's decision reached the server (decided_at is the runtime's own clock).
    reported_at = models.DateTimeField(null=True, blank=True)
    # A decision the runtime made after the deadline: refused as late, kept to say so.
    late_decision = models.CharField(max_length=20, blank=True)
    late_decision_at = models.DateTimeField(null=True, blank=True)
    # An approval honoured late whose request could not run again by itself: why not.
    late_not_run = models.CharField(max_length=300, blank=True)
    # Who ran the expired request again with the approval recorded late (used once).
    approval_used_at = models.DateTimeField(null=True, blank=True)
    approval_used_by = models.CharField(max_length=200, blank=True)

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["endpoint", "state"]), models.Index(fields=["state", "deadline_at"])]

    @property
    def is_open(self) -> bool:
        return self.state in PROMPT_OPEN


class PromptTransition(models.Model):
    """Every state change of a prompt, with the party that reported it and its own time."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="history")
    from_state = models.CharField(max_length=20, choices=PromptState.choices)
    to_state = models.CharField(max_length=20, choices=PromptState.choices)
    party = models.CharField(max_length=20, choices=PromptParty.choices)
    at = models.DateTimeField(auto_now_add=True)
    detail = models.CharField(max_length=500, blank=True)

    objects = TenantScopedManager(tenant_field="prompt__tenant")
    all_tenants = models.Manager()

    class Meta:
        ordering = ["at", "id"]


class ApprovalLink(models.Model):
    """A one-time signed link for the client's designated approver; only its hash is stored."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="links")
    token_hash = models.CharField(max_length=64, unique=True)
    email = models.EmailField()
    created_at = models.DateTimeField(auto_now_add=True)
    used_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedManager()
    all_tenants = models.Manager()


class ApprovalLinkVisit(models.Model):
    link = models.ForeignKey(ApprovalLink, on_delete=models.CASCADE, related_name="visits")
    at = models.DateTimeField(auto_now_add=True)
    ip = models.CharField(max_length=64)
    user_agent = models.CharField(max_length=500)
    outcome = models.CharField(max_length=40)

    objects = TenantScopedManager(tenant_field="link__tenant")
    all_tenants = models.Manager()


# --- incidents: several sessions on one outage --------------------------------------------------


class IncidentStatus(models.TextChoices):
    OPEN = "open", "Open"
    RESOLVED = "resolved", "Resolved"
    CLOSED = "closed", "Closed"


_I = IncidentStatus
INCIDENT_TRANSITIONS: dict[str, frozenset[str]] = {
    _I.OPEN: frozenset({_I.RESOLVED, _I.CLOSED}),
    # The outage came back: a resolved incident may be reopened until it is closed.
    _I.RESOLVED: frozenset({_I.OPEN, _I.CLOSED}),
    # Closed is the documentation as handed over: final.
    _I.CLOSED: frozenset(),
}


class Incident(models.Model):
    """An outage: the sessions several technicians ran on it, grouped, then documented."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    title = models.CharField(max_length=200)
    client_group = models.ForeignKey(
        "endpoints.ClientGroup",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="incidents",
        help_text="The client affected; when set, only its endpoints' sessions can be added.",
    )
    ticket = models.CharField(max_length=64, blank=True, help_text="The PSA ticket of the outage.")
    status = models.CharField(max_length=10, choices=IncidentStatus.choices, default=IncidentStatus.OPEN)
    status_changed_by = models.CharField(max_length=200, blank=True)
    summary = models.TextField(blank=True, help_text="Written at the end: what happened, what fixed it.")
    summary_by = models.CharField(max_length=200, blank=True)
    summary_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "status", "created_at"])]

    def __str__(self) -> str:
        return self.title


class IncidentSession(models.Model):
    """A session counted as part of an incident (a session may belong to several)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="memberships")
    session = models.ForeignKey(SupportSession, on_delete=models.PROTECT, related_name="incident_memberships")
    added_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    added_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    class Meta:
        ordering = ["added_at"]
        constraints = [models.UniqueConstraint(fields=["incident", "session"], name="incident_session_once")]


# --- review and share: a client-facing link to the reviewed record ---------------------------------


class ShareLink(models.Model):
    """A link for the client to a session's or an incident's reviewed record; only the token's hash is stored.

    ``reviewed_upto`` maps each session id to the last transcript index the link shows,
    captured at creation: later entries are not part of what was reviewed.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    session = models.ForeignKey(
        SupportSession, null=True, blank=True, on_delete=models.CASCADE, related_name="share_links"
    )
    incident = models.ForeignKey(Incident, null=True, blank=True, on_delete=models.CASCADE, related_name="share_links")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    label = models.CharField(max_length=200, blank=True, help_text="Who it is for, e.g. the client's contact.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reviewed_upto = models.JSONField(default=dict)

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(session__isnull=False, incident__isnull=True)
                    | models.Q(session__isnull=True, incident__isnull=False)
                ),
                name="share_link_one_subject",
            ),
        ]

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def is_expired(self, now=None) -> bool:
        from django.utils import timezone

        return self.expires_at <= (now or timezone.now())

    @property
    def is_usable(self) -> bool:
        return not self.is_revoked and not self.is_expired()

    @property
    def state(self) -> str:
        return "revoked" if self.is_revoked else ("expired" if self.is_expired() else "active")


class ShareLinkView(models.Model):
    """Every time a share link was opened: when, from where, with what, and as page or PDF."""

    link = models.ForeignKey(ShareLink, on_delete=models.CASCADE, related_name="views")
    at = models.DateTimeField(auto_now_add=True)
    ip = models.CharField(max_length=64)
    user_agent = models.CharField(max_length=500)
    format = models.CharField(max_length=10, default="page")

    objects = TenantScopedManager(tenant_field="link__tenant")
    all_tenants = models.Manager()

    class Meta:
        ordering = ["-at", "-id"]


# --- follow-ups: a later session on the same endpoint, scheduled and reminded ------------------------


class FollowUpStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    OPENED = "opened", "Opened"


FOLLOW_UP_TRANSITIONS: dict[str, frozenset[str]] = {
    FollowUpStatus.SCHEDULED: frozenset({FollowUpStatus.OPENED}),
    FollowUpStatus.OPENED: frozenset(),
}


class FollowUp(models.Model):
    """A follow-up session scheduled from a session, by its technician or approved by the end user.

    ``due_at`` is the deadline the reminder sweep enforces: once due, the technician it is
    assigned to is reminded once (``reminded_at``, console and e-mail). Opening it opens a session
    on the same endpoint, linked both ways (``opened_session``) and recorded in both transcripts.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    session = models.ForeignKey(SupportSession, on_delete=models.CASCADE, related_name="follow_ups")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.PROTECT, related_name="follow_ups")
    assigned_to = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    due_at = models.DateTimeField()
    note = models.CharField(max_length=500, blank=True)
    approved_prompt = models.OneToOneField(
        "Prompt", null=True, blank=True, on_delete=models.SET_NULL, related_name="follow_up"
    )
    status = models.CharField(max_length=10, choices=FollowUpStatus.choices, default=FollowUpStatus.SCHEDULED)
    status_changed_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    reminded_at = models.DateTimeField(null=True, blank=True)
    opened_session = models.OneToOneField(
        SupportSession, null=True, blank=True, on_delete=models.SET_NULL, related_name="opened_from_follow_up"
    )
    opened_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    class Meta:
        ordering = ["due_at"]
        indexes = [
            models.Index(fields=["status", "reminded_at", "due_at"]),
            models.Index(fields=["tenant", "assigned_to", "status", "due_at"]),
        ]

    @property
    def is_due(self) -> bool:
        from django.utils import timezone

        return self.status == FollowUpStatus.SCHEDULED and self.due_at <= timezone.now()
