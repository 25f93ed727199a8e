from django.apps import AppConfig


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    verbose_name = "Support sessions"

    def ready(self) -> None:
        from sessions_app import handlers  # noqa: F401  (registers its bridge handlers)
