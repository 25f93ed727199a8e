from django.apps import AppConfig


class EndpointsConfig(AppConfig):
    name = "endpoints"
    verbose_name = "Tenants and endpoints"

    def ready(self) -> None:
        from endpoints import (
            identity,  # noqa: F401  (its signal receivers: session times, socket re-checks)
            security_log,  # noqa: F401  (its signal receivers: the security log)
        )
