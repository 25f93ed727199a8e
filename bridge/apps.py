from django.apps import AppConfig


class BridgeConfig(AppConfig):
    name = "bridge"
    verbose_name = "Bridge"

    def ready(self) -> None:
        from bridge import handlers  # noqa: F401  (the bridge's own registry entries and hooks)
