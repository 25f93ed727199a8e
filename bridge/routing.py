"""Socket routes. Agents authenticate in their hello frame and send no Origin; console
pages ride the browser session, and their Origin must be one of ours."""

from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from bridge.consumers.agent import AgentConsumer
from bridge.consumers.console import ConsoleConsumer

websocket_urlpatterns = [
    path("ws/agent/", AgentConsumer.as_asgi(), name="agent-socket"),
    path(
        "ws/console/",
        AllowedHostsOriginValidator(AuthMiddlewareStack(ConsoleConsumer.as_asgi())),
        name="console-socket",
    ),
]
