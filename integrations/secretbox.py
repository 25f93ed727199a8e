"""Webhook secrets at rest (``caisey.secretbox``, the webhook purpose): they must be readable to sign,
so a hash will not do. The key derivation is the one this module always used: secrets sealed before
``caisey.secretbox`` existed still open."""

from __future__ import annotations

from caisey import secretbox


def seal(secret: str) -> str:
    return secretbox.seal(secret, purpose=secretbox.WEBHOOK_SECRETS)


def unseal(sealed: str) -> str:
    return secretbox.unseal(sealed, purpose=secretbox.WEBHOOK_SECRETS, what="a webhook secret")
