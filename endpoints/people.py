"""Services for a tenant's people: tenant admins invite technicians by e-mail and deactivate
(or reactivate) them from the console's members page.

An invitation creates the account with no usable password and e-mails a one-time link to
allauth's set-password page (Django's password-reset token: it stops working once a password is
set, and after PASSWORD_RESET_TIMEOUT). Deactivating signs the person out everywhere at once:
an inactive user's session no longer authenticates (ModelBackend), their API tokens are refused
(knox checks ``is_active``), and the commit rings their console sockets to re-check and close
(``endpoints.hooks.sign_in_changed_hooks``).
"""

from __future__ import annotations

import zoneinfo

from allauth.account.forms import default_token_generator
from allauth.account.utils import user_pk_to_url_str
from allauth.socialaccount.models import SocialApp
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse

from caisey import tenancy
from caisey.actors import Actor, Party
from caisey.errors import Conflict, Forbidden, Rejected
from endpoints.access import StepUp, require_member, step_up_given
from endpoints.hooks import sign_in_changed_hooks
from endpoints.models import Membership, Role, SecurityEventKind, Tenant, TenantSSO
from endpoints.security_log import security_event_record
from endpoints.services import _grant_admin_permissions

User = get_user_model()


def require_tenant_admin(actor: Actor, tenant_id) -> Membership:
    membership = require_member(actor, tenant_id)
    if membership.role != Role.ADMIN:
        raise Forbidden("only the tenant's admins manage its members")
    return membership


def invitation_url(user, *, site_url: str = "") -> str:
    """The one-time link that lets an invited person choose their password (allauth's
    password-reset key: it stops working once a password is set)."""
    path = reverse(
        "account_reset_password_from_key",
        kwargs={"uidb36": user_pk_to_url_str(user), "key": default_token_generator.make_token(user)},
    )
    return f"{(site_url or settings.CAISEY_PUBLIC_URL).rstrip('/')}{path}"


def membership_invite(
    *,
    actor: Actor,
    tenant: Tenant,
    email: str,
    role: str = Role.TECHNICIAN,
    site_url: str = "",
    address: str | None = None,
) -> Membership:
    """A new member of ``tenant`` known by ``email`` (also their username), who sets a password
    through the e-mailed link (on ``site_url``, else CAISEY_PUBLIC_URL)."""
    require_tenant_admin(actor, tenant.pk)
    email = email.strip().lower()
    if "@" not in email or len(email) > 150:
        raise Rejected("give the person's e-mail address")
    if role not in Role.values:
        raise Rejected(f"role must be one of {', '.join(Role.values)}")
    if User.objects.filter(username__iexact=email).exists():
        raise Conflict("someone with this e-mail address already has an account")
    try:
        with transaction.atomic():
            user = User.objects.create_user(username=email, email=email, password=None, is_staff=role == Role.ADMIN)
            if role == Role.ADMIN:
                _grant_admin_permissions(user)
            with tenancy.bind(tenant.pk):
                membership = Membership.objects.create(user=user, tenant=tenant, role=role)
            security_event_record(
                tenant_id=tenant.pk,
                kind=SecurityEventKind.MEMBER_INVITED,
                actor=actor,
                person=user,
                address=address,
                target=email,
                detail={"role": role},
            )
            link = invitation_url(user, site_url=site_url)
            inviter = actor.get_username() if hasattr(actor, "get_username") else "An administrator"
            second_factor = (
                " Your organisation requires a second factor: after choosing a password you will set up an "
                "authenticator app or a passkey."
                if tenant.mfa_required
                else ""
            )
            # Sent inside the transaction: if the mail cannot go, no account is left behind.
            send_mail(
                subject=f"You are invited to {tenant.name} on Caisey",
                message=(
                    f"{inviter} invited you to {tenant.name} on Caisey as {Role(role).label.lower()}.\n\n"
                    f"Choose your password here (the link works once):\n{link}\n{second_factor}"
                ),
                from_email=None,
                recipient_list=[email],
            )
    except IntegrityError:
        raise Conflict("someone with this e-mail address already has an account") from None
    return membership


def _set_active(*, actor: Actor, membership: Membership, active: bool, address: str | None) -> None:
    admin = require_tenant_admin(actor, membership.tenant_id)
    if membership.pk == admin.pk:
        raise Rejected("you cannot deactivate yourself")
    with transaction.atomic():
        User.objects.filter(pk=membership.user_id).update(is_active=active)
        security_event_record(
            tenant_id=membership.tenant_id,
            kind=SecurityEventKind.MEMBER_REACTIVATED if active else SecurityEventKind.MEMBER_DEACTIVATED,
            actor=actor,
            person=membership.user,
            address=address,
            target=membership.user.get_username(),
        )
        user_id = membership.user_id
        if not active:
            transaction.on_commit(lambda: sign_in_changed(user_id=user_id))


def membership_deactivate(*, actor: Actor, membership: Membership, address: str | None = None) -> None:
    """Sign the member out everywhere and keep them out (their history stays)."""
    _set_active(actor=actor, membership=membership, active=False, address=address)


def membership_reactivate(*, actor: Actor, membership: Membership, address: str | None = None) -> None:
    _set_active(actor=actor, membership=membership, active=True, address=address)


def sign_in_changed(*, user_id: int) -> None:
    """Tell the layers above that ``user_id``'s sign-in changed (their sockets re-check)."""
    for hook in sign_in_changed_hooks():
        hook(user_id)


# --- single sign-on ----------------------------------------------------------------------------------

ROLE_RANK = {Role.VIEWER: 0, Role.TECHNICIAN: 1, Role.ADMIN: 2}


def tenant_sso_configure(
    *,
    actor: Actor,
    tenant: Tenant,
    issuer: str,
    client_id: str,
    secret: str,
    allowed_domains: str = "",
    group_claim: str = "groups",
    role_mapping: dict[str, str] | None = None,
    default_role: str = "",
    accept_idp_mfa: bool = False,
    step_up: StepUp | None = None,
    address: str | None = None,
) -> TenantSSO:
    """Set up (or replace) ``tenant``'s OpenID Connect sign-in. Operators (the command line) and
    the tenant's admins, after a recent check (``step_up``). A blank ``secret`` keeps the stored
    one (the console never shows it back); a first set-up needs one. Writes an ``sso_configured``
    security event (the settings, never the secret: only whether it changed)."""
    if not isinstance(actor, Party):
        require_tenant_admin(actor, tenant.pk)
    checked = step_up_given(actor, step_up, doing="configuring single sign-on")
    role_mapping = role_mapping or {}
    issuer, client_id, group_claim = issuer.strip(), client_id.strip(), group_claim.strip()
    for role in [*role_mapping.values(), *([default_role] if default_role else [])]:
        if role not in Role.values:
            raise Rejected(f"unknown role {role!r}: one of {', '.join(Role.values)}")
    if not issuer.startswith(("https://", "http://localhost", "http://127.0.0.1")):
        raise Rejected("the issuer must be an https:// URL")
    if not client_id or len(client_id) > 191:
        raise Rejected("give the client id the provider issued (at most 191 characters)")
    if not group_claim or len(group_claim) > 100:
        raise Rejected("name the claim that lists the person's groups (e.g. groups)")
    if not allowed_domains.strip() and not role_mapping:
        raise Rejected("say who may sign in: allowed e-mail domains, a group-to-role mapping, or both")
    with transaction.atomic(), tenancy.bind(tenant.pk):
        existing = TenantSSO.objects.select_related("app").filter(tenant=tenant).first()
        if not secret and existing is None:
            raise Rejected("give the client secret the provider issued")
        app = existing.app if existing else SocialApp(provider="openid_connect")
        secret_changed = bool(secret) and secret != app.secret
        app.provider_id = f"tenant-{tenant.slug}"
        app.name = f"{tenant.name} sign-in"
        app.client_id = client_id
        if secret:
            app.secret = secret
        app.settings = {"server_url": issuer.rstrip("/"), "oauth_pkce_enabled": True, "scope": SSO_SCOPE}
        app.save()
        sso = existing or TenantSSO(tenant=tenant, app=app)
        sso.allowed_domains = " ".join(d.lower().lstrip("@") for d in allowed_domains.split())
        sso.group_claim = group_claim
        sso.role_mapping = role_mapping
        sso.default_role = default_role
        sso.accept_idp_mfa = accept_idp_mfa
        sso.save()
        security_event_record(
            tenant_id=tenant.pk,
            kind=SecurityEventKind.SSO_CONFIGURED,
            actor=actor,
            address=address,
            target=app.provider_id,
            detail={
                "what": "changed" if existing else "added",
                "issuer": app.settings["server_url"],
                "client_id": client_id,
                "secret_changed": secret_changed,
                "allowed_domains": sso.allowed_domains,
                "group_claim": group_claim,
                "role_mapping": role_mapping,
                "default_role": default_role,
                "accept_idp_mfa": accept_idp_mfa,
                **checked,
            },
        )
    return sso


def role_mapping_parse(text: str) -> dict[str, str]:
    """The console's role mapping, a line per group: ``group = role`` (``group: role`` also)."""
    mapping: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        group, sep, role = line.rpartition("=") if "=" in line else line.rpartition(":")
        group, role = group.strip(), role.strip().lower()
        if not sep or not group:
            raise Rejected(f"role mapping line {number}: write it as 'group = role'")
        if role not in Role.values:
            raise Rejected(f"role mapping line {number}: unknown role {role!r}: one of {', '.join(Role.values)}")
        mapping[group] = role
    return mapping


SSO_SCOPE = ["openid", "profile", "email", "groups"]


def sso_role_for(sso: TenantSSO, claims: dict) -> str | None:
    """The role a person signing in with ``claims`` gets in ``sso``'s tenant, or None (refused).
    Their groups pick the highest mapped role; otherwise an allowed e-mail domain (verified by
    the provider) gets the default role."""
    groups = claims.get(sso.group_claim) or []
    if isinstance(groups, str):
        groups = [groups]
    mapped = [sso.role_mapping[g] for g in groups if g in sso.role_mapping]
    if mapped:
        return max(mapped, key=lambda r: ROLE_RANK[Role(r)])
    email = str(claims.get("email") or "").lower()
    domain = email.rpartition("@")[2]
    verified = claims.get("email_verified") in (True, "true", "True")
    if domain and verified and domain in sso.allowed_domains.split() and sso.default_role:
        return sso.default_role
    return None


def membership_join_by_sso(*, sso: TenantSSO, user, role: str) -> Membership:
    """Just-in-time membership of a person the tenant's provider vouched for (first sign-in)."""
    with tenancy.bind(sso.tenant_id):
        if role == Role.ADMIN:
            User.objects.filter(pk=user.pk).update(is_staff=True)
            _grant_admin_permissions(user)
        membership = Membership.objects.create(user=user, tenant_id=sso.tenant_id, role=role)
        security_event_record(
            tenant_id=sso.tenant_id,
            kind=SecurityEventKind.SSO_LINKED,
            actor=user,
            person=user,
            target=sso.app.provider_id,
            detail={"role": role, "first_sign_in": True},
        )
        return membership


def _admin_permissions_revoke(user) -> None:
    from django.contrib.auth.models import Permission

    user.user_permissions.remove(*Permission.objects.filter(content_type__app_label="endpoints"))


def membership_sso_reapply(*, sso: TenantSSO, membership: Membership, role: str | None, claims_note: dict) -> str:
    """Every single sign-on of an existing member re-applies the tenant's mapping to what the
    provider says now: a new role is set (admin rights granted or withdrawn with it); someone who
    no longer qualifies (their group removed, their domain no longer allowed) is deactivated and
    signed out everywhere. Returns "kept", "changed" or "deactivated". Written as the system
    (the provider decided it), with the security event in the same transaction."""
    with transaction.atomic(), tenancy.bind(sso.tenant_id):
        user = membership.user
        if role is None:
            User.objects.filter(pk=user.pk).update(is_active=False)
            security_event_record(
                tenant_id=sso.tenant_id,
                kind=SecurityEventKind.MEMBER_DEACTIVATED,
                actor=Party.SYSTEM,
                person=user,
                target=user.get_username(),
                detail={"by": sso.app.provider_id, "reason": "no longer qualifies at sign-in", **claims_note},
            )
            user_id = user.pk
            transaction.on_commit(lambda: sign_in_changed(user_id=user_id))
            return "deactivated"
        if role == membership.role:
            return "kept"
        before = membership.role
        Membership.objects.filter(pk=membership.pk).update(role=role)
        membership.role = role
        User.objects.filter(pk=user.pk).update(is_staff=role == Role.ADMIN)
        if role == Role.ADMIN:
            _grant_admin_permissions(user)
        elif before == Role.ADMIN:
            _admin_permissions_revoke(user)
        security_event_record(
            tenant_id=sso.tenant_id,
            kind=SecurityEventKind.ROLE_CHANGED,
            actor=Party.SYSTEM,
            person=user,
            target=user.get_username(),
            detail={"by": sso.app.provider_id, "before": before, "after": role, **claims_note},
        )
        return "changed"


def tenant_security_update(
    *,
    actor: Actor,
    tenant: Tenant,
    mfa_required: bool,
    step_up_window_s: int,
    step_up: StepUp | None,
    address: str | None = None,
) -> Tenant:
    """A tenant admin's security settings: whether members need a second factor, and how recent
    a check risky actions need (1 minute to 12 hours). Needs a recent check (``step_up``),
    recorded in the security-log event."""
    require_tenant_admin(actor, tenant.pk)
    checked = step_up_given(actor, step_up, doing="changing the tenant's security settings")
    if not 60 <= step_up_window_s <= 12 * 3600:
        raise Rejected("the step-up window is between 1 minute and 12 hours")
    before = {"mfa_required": tenant.mfa_required, "step_up_window_s": tenant.step_up_window_s}
    after = {"mfa_required": mfa_required, "step_up_window_s": step_up_window_s}
    with transaction.atomic(), tenancy.bind(tenant.pk):
        Tenant.objects.filter(pk=tenant.pk).update(**after)
        if before != after:
            security_event_record(
                tenant_id=tenant.pk,
                kind=SecurityEventKind.POLICY_CHANGED,
                actor=actor,
                address=address,
                target="tenant security settings",
                detail={"before": before, "after": after, **checked},
            )
    tenant.refresh_from_db()
    return tenant


# --- time zones: the zone a person reads console times in ------------------------------------


def time_zone_names() -> list[str]:
    """The IANA zones this server knows (the system's tz database, else the tzdata package)."""
    return sorted(zoneinfo.available_timezones())


def time_zone_valid(name: str) -> str:
    """``name`` stripped, if it is a zone this server knows ("" keeps the default); else Rejected."""
    name = name.strip()
    if name and name not in zoneinfo.available_timezones():
        raise Rejected(f"unknown time zone {name[:64]!r}: use a name such as Europe/Paris or America/New_York")
    return name


def time_zone_of(membership: Membership | None) -> str:
    """The zone a member reads times in: their own choice, else their tenant's, else the server's."""
    if membership is not None:
        if membership.time_zone:
            return membership.time_zone
        if membership.tenant.time_zone:
            return membership.tenant.time_zone
    return settings.TIME_ZONE


def membership_time_zone_set(*, actor: Actor, tenant_id, time_zone: str) -> Membership:
    """A member's own time zone ("": the tenant's), any role. Bad input changes nothing."""
    membership = require_member(actor, tenant_id)
    name = time_zone_valid(time_zone)
    with tenancy.bind(membership.tenant_id):
        Membership.objects.filter(pk=membership.pk).update(time_zone=name)
    membership.time_zone = name
    return membership


def tenant_time_zone_set(*, actor: Actor, tenant_id, time_zone: str) -> Tenant:
    """The tenant's default zone for members who chose none ("": the server's): a tenant admin's choice."""
    membership = require_member(actor, tenant_id)
    if membership.role != Role.ADMIN:
        raise Forbidden("only a tenant admin can change the tenant's time zone")
    name = time_zone_valid(time_zone)
    with tenancy.bind(tenant_id):
        Tenant.objects.filter(pk=tenant_id).update(time_zone=name)
        return Tenant.objects.get(pk=tenant_id)
