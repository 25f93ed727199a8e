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

from allauth.account.forms import default_token_generator
from allauth.account.utils import user_pk_to_url_str
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse

from caisey import tenancy
from caisey.actors import Actor
from caisey.errors import Conflict, Forbidden, Rejected
from endpoints.access import require_member
from endpoints.hooks import sign_in_changed_hooks
from endpoints.models import Membership, Role, Tenant
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
    *, actor: Actor, tenant: Tenant, email: str, role: str = Role.TECHNICIAN, site_url: str = ""
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


def _set_active(*, actor: Actor, membership: Membership, active: bool) -> None:
    admin = require_tenant_admin(actor, membership.tenant_id)
    if membership.pk == admin.pk:
        raise Rejected("you cannot deactivate yourself")
    with transaction.atomic():
        User.objects.filter(pk=membership.user_id).update(is_active=active)
        user_id = membership.user_id
        if not active:
            transaction.on_commit(lambda: sign_in_changed(user_id=user_id))


def membership_deactivate(*, actor: Actor, membership: Membership) -> None:
    """Sign the member out everywhere and keep them out (their history stays)."""
    _set_active(actor=actor, membership=membership, active=False)


def membership_reactivate(*, actor: Actor, membership: Membership) -> None:
    _set_active(actor=actor, membership=membership, active=True)


def sign_in_changed(*, user_id: int) -> None:
    """Tell the layers above that ``user_id``'s sign-in changed (their sockets re-check)."""
    for hook in sign_in_changed_hooks():
        hook(user_id)
