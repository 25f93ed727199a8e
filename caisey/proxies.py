"""The real client address behind a TLS-terminating proxy.

Daphne's own ``--proxy-headers`` is not used: it believes X-Forwarded-For from any peer and takes
its first (client-written) entry, so anyone reaching the server could pick the address rate
limits count against. Instead, the ASGI application is wrapped in Uvicorn's
``ProxyHeadersMiddleware`` (a plain ASGI middleware; Uvicorn itself does not run): only a peer in
``CAISEY_TRUSTED_PROXIES`` (addresses or networks) is believed, and the client is the right-most
X-Forwarded-For entry that is not itself a trusted proxy. Its X-Forwarded-Proto sets the scheme
(https/wss), which Django's HTTPS redirect and secure cookies rely on.

Everything that reads the client address then sees the client: Django's ``REMOTE_ADDR`` (rate
limits, link-visit logs) and the agent socket's ``scope["client"]``.
"""

from __future__ import annotations

from typing import Any

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware


def behind(app: Any, trusted: list[str]) -> Any:
    """``app``, believing the forwarding headers of the ``trusted`` proxies only (none: nobody)."""
    return ProxyHeadersMiddleware(app, trusted_hosts=list(trusted)) if trusted else app
