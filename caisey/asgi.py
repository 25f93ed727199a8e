"""ASGI entry point: Django for HTTP, Channels consumers for agent and console sockets."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "caisey.settings")

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

# Daphne serves the console's few static files itself; a CDN or proxy may take over in production.
django_asgi_app = ASGIStaticFilesHandler(get_asgi_application())

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from bridge.routing import websocket_urlpatterns  # noqa: E402
from caisey import proxies  # noqa: E402

router = ProtocolTypeRouter({"http": django_asgi_app, "websocket": URLRouter(websocket_urlpatterns)})
# Behind a TLS proxy, the client's address and scheme come from that proxy's headers (caisey/proxies.py).
application = proxies.behind(router, settings.TRUSTED_PROXIES)
