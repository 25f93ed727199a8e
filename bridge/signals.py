"""Signals the bridge sends upward about delivery; domain apps connect to them."""

from django.dispatch import Signal

# Both are sent inside the transaction that changed the message, with message=OutboxMessage.
outbox_delivered = Signal()
outbox_failed = Signal()
