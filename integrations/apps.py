from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # sessions_app calls its transcript hook inside every change's transaction; webhooks
        # register into it here (sessions_app never imports integrations).
        # Security events come through the audit hook, other changes through caisey.event_hooks; all
        # are called inside the change's transaction.
        from caisey.audit_hooks import on_audit_events
        from caisey.event_hooks import on_events
        from integrations import events
        from sessions_app.hooks import on_transcript_written

        on_transcript_written(events.events_from_transcript)
        on_audit_events(events.events_from_audit)
        on_events(events.events_from_outside)
