from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit stream"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registration, not imports from below: sessions_app and endpoints call caisey.audit_hooks,
        # the bridge's /metrics calls its registered collectors (docs/architecture.md, layers).
        from audit.journal import journal_write
        from audit.metrics import AuditLagCollector
        from bridge.prometheus import register_collector
        from caisey.audit_hooks import on_audit_events

        on_audit_events(journal_write)
        register_collector(AuditLagCollector)
