"""Tenant setup in the Django admin. A tenant admin sees and edits only their own tenant:
the default managers are tenant-scoped (caisey.tenancy), and new rows take the admin's tenant."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin, messages
from django.db import transaction
from django.utils import timezone

from caisey.actors import Actor, Party
from endpoints import access, agent_install, services
from endpoints.models import (
    ApprovalPolicy,
    ClientGroup,
    Endpoint,
    EnrollmentToken,
    Membership,
    SecurityEvent,
    SecurityEventKind,
    Tenant,
)
from endpoints.security_log import request_address, security_event_record


def admin_actor(request) -> Actor:
    """Who acts in the admin: the signed-in member, or, for a superuser without a membership
    (the superuser fallback of endpoints.middleware), the server's operator."""
    if getattr(request, "membership", None) is None and request.user.is_superuser:
        return Party.OPERATOR
    return request.user


class TenantOwnedAdmin(admin.ModelAdmin):
    def get_exclude(self, request, obj=None):
        excluded = list(super().get_exclude(request, obj) or [])
        if not request.user.is_superuser:
            excluded.append("tenant")
        return excluded

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        tenant = getattr(request, "tenant", None)
        if request.user.is_superuser or tenant is None:
            return form

        class TenantBoundForm(form):
            """Takes the admin's tenant before validation, so per-tenant unique constraints
            (a client group's slug) are checked as form errors instead of failing on save."""

            def __init__(self, *args, **kw):
                super().__init__(*args, **kw)
                if self.instance._state.adding:
                    self.instance.tenant = tenant

            def _get_validation_exclusions(self):
                exclude = super()._get_validation_exclusions()
                exclude.discard("tenant")
                return exclude

        TenantBoundForm.__name__ = form.__name__
        return TenantBoundForm

    def save_model(self, request, obj, form, change):
        if not change and not request.user.is_superuser:
            obj.tenant = request.tenant
        super().save_model(request, obj, form, change)


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "mfa_required", "created_at"]
    search_fields = ["name", "slug"]

    def has_module_permission(self, request):
        return request.user.is_superuser

    has_view_permission = has_add_permission = has_change_permission = has_delete_permission = (
        lambda self, request, obj=None: request.user.is_superuser
    )


@admin.register(SecurityEvent)
class SecurityEventAdmin(admin.ModelAdmin):
    """Every tenant's security log, read-only, for the server's operators: the only place the
    tenant-less rows (failed sign-ins with names nobody has) are seen. Tenant admins read their
    own log on the console (members/security-log/)."""

    list_display = ["at", "kind", "tenant", "actor_label", "person", "address", "target"]
    list_filter = ["kind", ("tenant", admin.EmptyFieldListFilter)]
    search_fields = ["actor_label", "target", "address"]
    date_hierarchy = "at"

    def has_module_permission(self, request):
        return request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Membership)
class MembershipAdmin(TenantOwnedAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__username"]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        # Users are not tenant-owned: unrestricted, the user choice would list every
        # tenant's usernames. A tenant admin only ever picks among their own people.
        if db_field.name == "user" and not request.user.is_superuser:
            tenant = getattr(request, "tenant", None)
            kwargs["queryset"] = db_field.related_model._default_manager.filter(
                membership__tenant_id=tenant.pk if tenant else None
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(ClientGroup)
class ClientGroupAdmin(TenantOwnedAdmin):
    list_display = ["name", "slug", "approver_email", "tenant"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(EnrollmentToken)
class EnrollmentTokenAdmin(TenantOwnedAdmin):
    list_display = ["prefix", "client_group", "uses", "max_uses", "expires_at", "revoked_at", "note"]
    list_filter = ["client_group"]
    readonly_fields = ["prefix", "uses", "simulated", "created_by", "created_at"]
    fields = [
        "client_group",
        "note",
        "max_uses",
        "expires_at",
        "revoked_at",
        "prefix",
        "uses",
        "created_by",
        "created_at",
    ]
    actions = ["revoke"]

    def get_changeform_initial_data(self, request):
        return {"expires_at": timezone.now() + timedelta(days=7), "max_uses": 1}

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        token, secret = services.enrollment_token_issue(
            actor=admin_actor(request),
            client_group=obj.client_group,
            expires_in=obj.expires_at - timezone.now(),
            max_uses=obj.max_uses,
            note=obj.note,
        )
        obj.pk = token.pk
        obj.refresh_from_db()
        messages.warning(request, f"Enrollment token (shown once, copy it now): {secret}")
        # The install lines carry the secret too: shown with it, once, the same way.
        server = agent_install.server_url(request)
        messages.info(request, f"Linux: {agent_install.linux_command(server=server, secret=secret)}")
        slug = obj.client_group.slug
        messages.info(
            request,
            f"Windows: {agent_install.windows_command(server=server, secret=secret, client_group_slug=slug)}",
        )
        messages.info(request, agent_install.msi_where(request))

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):
        for token in queryset:
            services.enrollment_token_revoke(actor=admin_actor(request), token=token)


@admin.register(Endpoint)
class EndpointAdmin(TenantOwnedAdmin):
    list_display = ["hostname", "client_group", "status", "simulated", "agent_version", "last_seen_at", "enrolled_at"]
    list_filter = ["status", "client_group", "simulated"]
    search_fields = ["hostname", "tags", "machine_id"]
    readonly_fields = [
        "machine_id",
        "status",
        "status_changed_by",
        "status_reason",
        "enrolled_at",
        "enrolled_with",
        "simulated",
        "agent_version",
        "machine_context",
        "last_seen_at",
        "connected_at",
        "disconnected_at",
    ]
    fields = ["hostname", "client_group", "tags", *readonly_fields]
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False  # endpoints come from enrollment only

    @admin.action(description="Revoke selected endpoints (their agents are refused and stop)")
    def revoke(self, request, queryset):
        for endpoint in queryset.filter(status="enrolled"):
            services.endpoint_revoke(actor=admin_actor(request), endpoint=endpoint, reason="revoked in admin")
        messages.success(request, "Revoked.")


@admin.register(ApprovalPolicy)
class ApprovalPolicyAdmin(TenantOwnedAdmin):
    list_display = ["__str__", "client_group", "endpoint", "requires", "response_deadline_s", "allow_escalation"]
    list_filter = ["requires"]

    def save_model(self, request, obj, form, change):
        # Loosening or tightening who must approve what is a risky change: a recent check first.
        checked = access.step_up_require(request) if getattr(request, "membership", None) is not None else None
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            _policy_event(request, obj, "changed" if change else "added", form.changed_data, checked)

    def delete_model(self, request, obj):
        checked = access.step_up_require(request) if getattr(request, "membership", None) is not None else None
        with transaction.atomic():
            _policy_event(request, obj, "deleted", [], checked)
            super().delete_model(request, obj)


def _policy_event(request, policy: ApprovalPolicy, what: str, fields: list[str], step_up: access.StepUp | None) -> None:
    """An approval policy change in the tenant's security log (the admin is its write path), with
    the step-up check that let a tenant's admin make it (the server's operator, a superuser
    without a tenant, has none to record)."""
    security_event_record(
        tenant_id=policy.tenant_id,
        kind=SecurityEventKind.POLICY_CHANGED,
        actor=admin_actor(request),
        address=request_address(request),
        target=f"approval policy of {policy.client_group or policy.endpoint}",
        detail={
            "what": what,
            "fields": fields,
            "requires": policy.requires,
            "allow_without_user": policy.allow_without_user,
            "allow_escalation": policy.allow_escalation,
            **access.step_up_detail(step_up),
        },
    )
