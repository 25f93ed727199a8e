from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # sessions_app calls its transcript hook inside every change's transaction; webhooks
        # register into it here (sessions_app never imports integrations).
        from integrations import events
        from sessions_app.hooks import on_transcript_written

        on_transcript_written(events.events_from_transcript)
