"""Signals the endpoints layer sends upward; the bridge listens (layers point one way)."""

from django.dispatch import Signal

# Sent after commit with endpoint_id: live connections of that endpoint must close.
endpoint_revoked = Signal()
