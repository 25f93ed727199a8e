"""Webhook secrets at rest: encrypted with Fernet (AES-128-CBC + HMAC-SHA256, the cryptography
package) under keys derived from SECRET_KEY and its fallbacks, so a copy of the database alone
cannot sign as Caisey. They must be readable to sign (a hash cannot sign), hence not hashed."""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def _fernet(secret_key: str) -> Fernet:
    key = hmac.new(secret_key.encode(), b"caisey webhook secrets v1", hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def _box() -> MultiFernet:
    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return MultiFernet([_fernet(k) for k in keys])


def seal(secret: str) -> str:
    return _box().encrypt(secret.encode()).decode()


def unseal(sealed: str) -> str:
    try:
        return _box().decrypt(sealed.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            "a webhook secret cannot be decrypted: SECRET_KEY changed without the old one in SECRET_KEY_FALLBACKS"
        ) from None
