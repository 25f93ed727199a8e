"""Who and what: tenants, their people, their clients, and enrolled endpoints."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import models
from django.utils import timezone

from caisey.tenancy import TenantScopedManager


class Tenant(models.Model):
    """An MSP or an internal IT team: the unit of isolation."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # A share link only from a record a technician marked reviewed (review.completed); a tenant
    # admin may turn this off (endpoints/services.py tenant_share_review_set).
    share_requires_review = models.BooleanField(default=True)
    mfa_required = models.BooleanField(
        default=True,
        help_text="Members must enrol a second factor (authenticator app or passkey) before reaching the console.",
    )
    # Turns a session's or incident's ticket reference into a link to the tenant's PSA: an http(s)
    # URL containing {ticket} (endpoints/tickets.py); a tenant admin's choice, empty for no link.
    ticket_url_template = models.CharField(max_length=500, blank=True)
    step_up_window_s = models.PositiveIntegerField(
        default=15 * 60,
        help_text="Risky actions (shell commands, service restarts, bulk runs, share links, policy changes) need a "
        "second-factor check within this many seconds.",
    )
    # The zone console pages show times in for members who chose none ("": the server's, TIME_ZONE).
    time_zone = models.CharField(max_length=64, blank=True)

    objects = TenantScopedManager(tenant_field="pk")
    all_tenants = models.Manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    TECHNICIAN = "technician", "Technician"
    VIEWER = "viewer", "Viewer"


class Membership(models.Model):
    """A Django user's place in one tenant. A user belongs to exactly one tenant."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.TECHNICIAN)
    created_at = models.DateTimeField(auto_now_add=True)
    # The zone this person reads times in (an IANA name); "": the tenant's (endpoints.people.time_zone_of).
    time_zone = models.CharField(max_length=64, blank=True)

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    def __str__(self) -> str:
        return f"{self.user} ({self.role}) in {self.tenant}"

    @property
    def can_operate(self) -> bool:
        return self.role in (Role.ADMIN, Role.TECHNICIAN)


class ClientGroup(models.Model):
    """A client of the MSP (or a department of an internal IT team)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="client_groups")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80)
    approver_email = models.EmailField(blank=True, help_text="The client's designated approver for escalated prompts.")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "slug"], name="client_group_slug_per_tenant")]

    def __str__(self) -> str:
        return self.name


class EnrollmentToken(models.Model):
    """A secret an installer uses once (or a few times) to enroll endpoints into a client group.

    Only the SHA-256 of the token is stored; the token itself is shown once at issue.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="enrollment_tokens")
    client_group = models.ForeignKey(ClientGroup, on_delete=models.CASCADE, related_name="enrollment_tokens")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=8, editable=False, help_text="First characters, to tell tokens apart.")
    note = models.CharField(max_length=200, blank=True)
    # Set by `manage.py demo` for its simulated fleet: the endpoints enrolled with it are marked so.
    simulated = models.BooleanField(default=False, editable=False)
    expires_at = models.DateTimeField()
    max_uses = models.PositiveIntegerField(default=1)
    uses = models.PositiveIntegerField(default=0, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… for {self.client_group}"


class EndpointStatus(models.TextChoices):
    ENROLLED = "enrolled", "Enrolled"
    REVOKED = "revoked", "Revoked"


ENDPOINT_TRANSITIONS: dict[str, frozenset[str]] = {
    EndpointStatus.ENROLLED: frozenset({EndpointStatus.REVOKED}),
    EndpointStatus.REVOKED: frozenset(),
}


class Presence(models.TextChoices):
    ACTIVE = "active", "Active"
    LAZY = "lazy", "Lazy"
    DEGRADED = "degraded", "Degraded"
    OFFLINE = "offline", "Offline"
    # Asked to switch to active heartbeats; the agent has not applied the new cadence yet.
    WAKING = "waking", "Waking"


class AgentMode(models.TextChoices):
    ACTIVE = "active", "Active"
    LAZY = "lazy", "Lazy"


class Endpoint(models.Model):
    """An enrolled machine with a persistent identity and its last known context."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="endpoints")
    client_group = models.ForeignKey(ClientGroup, on_delete=models.PROTECT, related_name="endpoints")
    hostname = models.CharField(max_length=255)
    machine_id = models.CharField(max_length=64, help_text="The agent's stable identifier for this machine.")
    tags = models.CharField(max_length=500, blank=True, help_text="Space-separated labels, e.g. 'dc erp'.")
    # Enrolled with a simulated token (the demo's fleet: bench/sim_fleet.py agents speaking the real
    # protocol, no machine behind them); the console shows a "simulated" badge.
    simulated = models.BooleanField(default=False, editable=False)
    credential_hash = models.CharField(max_length=64, editable=False)
    status = models.CharField(max_length=20, choices=EndpointStatus.choices, default=EndpointStatus.ENROLLED)
    status_changed_by = models.CharField(max_length=200, blank=True)
    status_reason = models.CharField(max_length=500, blank=True)
    enrolled_at = models.DateTimeField(auto_now_add=True)
    enrolled_with = models.ForeignKey(EnrollmentToken, null=True, blank=True, on_delete=models.SET_NULL)
    credential_rotated_at = models.DateTimeField(null=True, blank=True)

    agent_version = models.CharField(max_length=40, blank=True)
    machine_context = models.JSONField(default=dict, blank=True)
    context_updated_at = models.DateTimeField(null=True, blank=True)

    # Presence is derived from these (endpoints.presence), never stored as a flag.
    last_seen_at = models.DateTimeField(null=True, blank=True)
    heartbeat_interval = models.FloatField(default=60.0)
    mode = models.CharField(max_length=10, choices=AgentMode.choices, default=AgentMode.LAZY)
    # When the server last asked for another mode, and when the agent last answered with the
    # cadence it beats at (its hello, or its acknowledgement of a mode.set). Between the two the
    # endpoint is waking, judged on the old cadence's deadline (endpoints.presence): the new one is
    # counted from the answer, never from a beat at the old cadence.
    mode_changed_at = models.DateTimeField(null=True, blank=True)
    cadence_applied_at = models.DateTimeField(null=True, blank=True)
    connection_id = models.CharField(max_length=32, blank=True)
    connected_at = models.DateTimeField(null=True, blank=True)
    disconnected_at = models.DateTimeField(null=True, blank=True)
    # What consoles were last told, so the sweep announces each change once.
    presence_announced = models.CharField(max_length=10, choices=Presence.choices, default=Presence.OFFLINE)
    # Why, and since when, as last announced (bridge.health.Connectivity): one story for every page.
    presence_reason = models.CharField(max_length=300, blank=True)
    presence_since = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    class Meta:
        ordering = ["hostname"]
        constraints = [models.UniqueConstraint(fields=["tenant", "machine_id"], name="endpoint_machine_per_tenant")]
        indexes = [
            models.Index(fields=["tenant", "hostname"]),
            models.Index(fields=["presence_announced", "last_seen_at"]),
        ]

    def __str__(self) -> str:
        return self.hostname

    @property
    def tag_list(self) -> list[str]:
        return self.tags.split()


class ApprovalRequirement(models.TextChoices):
    NONE = "none", "No approval needed"
    SHELL = "shell", "Shell commands only"
    COMMANDS = "commands", "All commands (shell and built-in commands)"
    EVERYTHING = "everything", "Everything, read-only diagnostics included"


# Which action categories each requirement gates.
GATED_CATEGORIES: dict[str, frozenset[str]] = {
    ApprovalRequirement.NONE: frozenset(),
    ApprovalRequirement.SHELL: frozenset({"shell"}),
    ApprovalRequirement.COMMANDS: frozenset({"shell", "command"}),
    ApprovalRequirement.EVERYTHING: frozenset({"shell", "command", "diagnostic"}),
}


class ApprovalPolicy(models.Model):
    """When the end user must approve: per client group, with an optional override per endpoint."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    client_group = models.OneToOneField(
        ClientGroup, null=True, blank=True, on_delete=models.CASCADE, related_name="approval_policy"
    )
    endpoint = models.OneToOneField(
        Endpoint,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="approval_policy",
        help_text="Set to override the client group's policy for one endpoint.",
    )
    requires = models.CharField(
        max_length=20, choices=ApprovalRequirement.choices, default=ApprovalRequirement.COMMANDS
    )
    response_deadline_s = models.PositiveIntegerField(default=300)
    allow_escalation = models.BooleanField(
        default=True, help_text="An unanswered prompt may go to the client group's designated approver by email."
    )
    allow_without_user = models.BooleanField(
        default=False, help_text="A prompt may be approved (by the designated approver) when nobody is logged in."
    )
    escalate_after_percent = models.PositiveSmallIntegerField(
        default=50,
        validators=[MaxValueValidator(100)],
        help_text="How much of the response deadline (in %) the user at the endpoint has before a prompt may be"
        " escalated; at once when the endpoint reports nobody logged in (and approval without a user is allowed).",
    )

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(client_group__isnull=False, endpoint__isnull=True)
                | models.Q(client_group__isnull=True, endpoint__isnull=False),
                name="policy_for_group_xor_endpoint",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_requires_display()} ({self.client_group or self.endpoint})"

    def gates(self, category: str) -> bool:
        return category in GATED_CATEGORIES[self.requires]


class TenantSSO(models.Model):
    """A tenant's OpenID Connect sign-in (Microsoft Entra ID, Google Workspace, Okta, ...).

    The provider's issuer, client id and secret live in django-allauth's ``SocialApp``
    (``app``; provider ``openid_connect``, provider id ``tenant-<slug>``); Caisey's rules live
    here: who may come in (an e-mail domain, or a group in ``group_claim``) and with which role.
    People who qualify get their membership the first time they sign in (endpoints.identity)."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="sso")
    app = models.OneToOneField("socialaccount.SocialApp", on_delete=models.CASCADE, related_name="tenant_sso")
    allowed_domains = models.CharField(
        max_length=500,
        blank=True,
        help_text="Space-separated e-mail domains whose people may sign in, e.g. 'msp.example'.",
    )
    group_claim = models.CharField(
        max_length=100, default="groups", help_text="The claim that lists the person's groups."
    )
    role_mapping = models.JSONField(
        default=dict, blank=True, help_text='Group -> role, e.g. {"caisey-admins": "admin", "helpdesk": "technician"}.'
    )
    default_role = models.CharField(
        max_length=20,
        choices=Role.choices,
        blank=True,
        help_text="Role of someone from an allowed domain whose groups map to none (blank: they are refused).",
    )
    accept_idp_mfa = models.BooleanField(
        default=False,
        help_text="A sign-in whose provider asserts multi-factor authentication (the amr claim: mfa, otp, hwk, "
        "swk, ...) counts as Caisey's second factor for that sign-in (enrolment and step-up).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    def __str__(self) -> str:
        return f"OpenID Connect for {self.tenant}"


class TokenScope(models.TextChoices):
    READ = "read", "Read-only"
    OPERATOR = "operator", "Operator"


class ApiToken(models.Model):
    """Caisey's facts about one REST API token (django-rest-knox's ``AuthToken``, which keeps only
    the hash): its tenant, what it may do, who issued it, when it was last used. A knox token
    without this row is refused writes (``endpoints.api_tokens.TokenScopeAllows``): fail closed."""

    token = models.OneToOneField("knox.AuthToken", on_delete=models.CASCADE, related_name="caisey")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100, help_text="What the token is for (a script, an integration).")
    scope = models.CharField(max_length=20, choices=TokenScope.choices, default=TokenScope.READ)
    issued_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    def __str__(self) -> str:
        return f"{self.name} ({self.get_scope_display()})"


class SecurityEventKind(models.TextChoices):
    LOGIN = "login", "Signed in"
    LOGIN_FAILED = "login_failed", "Sign-in failed"
    LOCKOUT = "lockout", "Locked out"
    LOGOUT = "logout", "Signed out"
    FACTOR_ADDED = "factor_added", "Second factor added"
    FACTOR_REMOVED = "factor_removed", "Second factor removed"
    FACTOR_RESET = "factor_reset", "Recovery codes regenerated"
    SSO_LINKED = "sso_linked", "Single sign-on account linked"
    TOKEN_ISSUED = "token_issued", "API token issued"
    TOKEN_REVOKED = "token_revoked", "API token revoked"
    TOKEN_ROTATED = "token_rotated", "API token rotated"
    SSO_CONFIGURED = "sso_configured", "Single sign-on configured"
    ROLE_CHANGED = "role_changed", "Role changed"
    MEMBER_INVITED = "member_invited", "Member invited"
    MEMBER_DEACTIVATED = "member_deactivated", "Member deactivated"
    MEMBER_REACTIVATED = "member_reactivated", "Member reactivated"
    POLICY_CHANGED = "policy_changed", "Policy changed"
    ENDPOINT_REENROLLED = "endpoint_reenrolled", "Endpoint re-enrolled"
    WEBHOOK_CHANGED = "webhook_changed", "Webhook destination changed"
    WEBHOOK_DISABLED = "webhook_disabled", "Webhook destination disabled after failing"


class SecurityEvent(models.Model):
    """One line of a tenant's security log (``endpoints.security_log.security_event_record``).

    ``tenant`` is empty only for a failed sign-in with a username nobody has: it belongs to no
    tenant, so only the server's operators see it (Django admin). ``actor`` is who did it (empty
    for the system or an unknown person), ``person`` whom it concerns (the member who signed in,
    whose token was revoked), ``target`` what it was done to, in words."""

    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    at = models.DateTimeField(default=timezone.now, db_index=True)
    kind = models.CharField(max_length=30, choices=SecurityEventKind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=200)
    person = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    address = models.GenericIPAddressField(null=True, blank=True)
    target = models.CharField(max_length=300, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    class Meta:
        ordering = ["-at", "-pk"]
        indexes = [models.Index(fields=["tenant", "-at"], name="security_event_tenant_at")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} at {self.at:%Y-%m-%d %H:%M:%S}"
