"""Secrets the server must read back later, at rest: encrypted with Fernet (AES-128-CBC + HMAC-SHA256,
the cryptography package) under keys derived from SECRET_KEY and its fallbacks, one derivation per
purpose, so a copy of the database alone reads none of them. Used for webhook secrets
(``integrations.secretbox``) and for action secrets (a password for a login test, kept until the
action is final: ``sessions_app.services.actions``; opened only by the bridge as it writes the
action.run frame)."""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

WEBHOOK_SECRETS = b"caisey webhook secrets v1"
ACTION_SECRETS = b"caisey action secrets v1"


def _fernet(secret_key: str, purpose: bytes) -> Fernet:
    key = hmac.new(secret_key.encode(), purpose, hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def _box(purpose: bytes) -> MultiFernet:
    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return MultiFernet([_fernet(k, purpose) for k in keys])


def seal(secret: str, *, purpose: bytes) -> str:
    return _box(purpose).encrypt(secret.encode()).decode()


def unseal(sealed: str, *, purpose: bytes, what: str = "a secret") -> str:
    try:
        return _box(purpose).decrypt(sealed.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            f"{what} cannot be decrypted: SECRET_KEY changed without the old one in SECRET_KEY_FALLBACKS"
        ) from None
