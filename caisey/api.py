"""The app-free parts of the versioned REST API: JSON parsing, ids, pagination, errors, schema.

The kernel imports no app: the tenant-binding base view (``TenantScopedAPIMixin``, which
resolves a user's membership) lives in ``endpoints/api_base.py``.

Errors all have one JSON shape, ``{"error": <code>, "detail": <message>}``
(plus ``field_errors`` for per-field validation messages).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, parsers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from caisey.errors import app_error, http_status

# --- parsing -------------------------------------------------------------------------------


class JSONParser(parsers.JSONParser):
    """DRF's, except that absurdly deep nesting is a 400 too (json raises RecursionError for it)."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply") from None


def parse_uuid(value: Any) -> uuid.UUID:
    """An id from the URL; anything that is not a UUID is simply not found."""
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        raise exceptions.NotFound() from None


# --- pagination ----------------------------------------------------------------------------


class Pagination(LimitOffsetPagination):
    """``?limit=&offset=``; 50 by default, at most 500 a page."""

    default_limit = 50
    max_limit = 500
    # Databases store offsets in 64 bits (SQLite raises past that): nothing lies this far anyway.
    max_offset = 1_000_000_000

    def get_offset(self, request) -> int:
        return min(super().get_offset(request), self.max_offset)

    def get_paginated_response_schema(self, schema: dict) -> dict:
        """DRF's, in OpenAPI 3.1's words (the document is 3.1, for its webhooks): 3.1 has no
        ``nullable``; a null ``next``/``previous`` is the type ``["string", "null"]``."""
        answer = super().get_paginated_response_schema(schema)
        for prop in answer["properties"].values():
            if prop.pop("nullable", False):
                prop["type"] = [prop["type"], "null"]
        return answer


# --- errors --------------------------------------------------------------------------------

_API_ERROR_CODES = {
    status.HTTP_400_BAD_REQUEST: "invalid_request",
    status.HTTP_401_UNAUTHORIZED: "not_authenticated",
    status.HTTP_403_FORBIDDEN: "forbidden",
    status.HTTP_404_NOT_FOUND: "not_found",
    status.HTTP_405_METHOD_NOT_ALLOWED: "method_not_allowed",
    status.HTTP_406_NOT_ACCEPTABLE: "not_acceptable",
    status.HTTP_409_CONFLICT: "conflict",
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: "unsupported_media_type",
    status.HTTP_429_TOO_MANY_REQUESTS: "rate_limited",
}


def error_response(status_code: int, error: str, detail: str, **extra: Any) -> Response:
    set_rollback()
    return Response({"error": error, "detail": detail, **extra}, status=status_code)


def _flatten(detail: Any, prefix: str = "") -> list[str]:
    if isinstance(detail, dict):
        out: list[str] = []
        for key, value in detail.items():
            name = key if key != "non_field_errors" else ""
            out += _flatten(value, f"{prefix}.{name}" if prefix and name else (name or prefix))
        return out
    if isinstance(detail, list):
        return [m for item in detail for m in _flatten(item, prefix)]
    return [f"{prefix}: {detail}" if prefix else str(detail)]


def _malformed_id(exc: DjangoValidationError) -> bool:
    """A UUIDField (or similar) refusing a lookup value: the object cannot exist."""
    params = getattr(exc, "params", None)
    return getattr(exc, "code", None) == "invalid" and isinstance(params, dict) and "value" in params


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """One JSON error shape for every API failure. Unknown exceptions stay 500s."""
    known = app_error(exc)
    if known is not None:
        return error_response(http_status(known), known.code, str(known) or known.kind)
    if isinstance(exc, (ObjectDoesNotExist, Http404)):
        return error_response(status.HTTP_404_NOT_FOUND, "not_found", "not found")
    if isinstance(exc, DjangoValidationError):
        if _malformed_id(exc):
            return error_response(status.HTTP_404_NOT_FOUND, "not_found", "not found")
        return error_response(status.HTTP_400_BAD_REQUEST, "invalid_request", "; ".join(exc.messages))
    if isinstance(exc, DjangoPermissionDenied):
        return error_response(status.HTTP_403_FORBIDDEN, "forbidden", str(exc) or "permission denied")

    response = drf_exception_handler(exc, context)  # keeps WWW-Authenticate, Retry-After, Allow
    if response is None:
        return None
    code = _API_ERROR_CODES.get(response.status_code, "error")
    if isinstance(exc, exceptions.ValidationError):
        messages = _flatten(exc.detail)
        response.data = {"error": code, "detail": "; ".join(messages) or "invalid request", "field_errors": exc.detail}
        if not isinstance(exc.detail, dict):
            response.data.pop("field_errors")
    elif response.status_code == status.HTTP_404_NOT_FOUND:
        response.data = {"error": code, "detail": "not found"}
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        response.data = {"error": code, "detail": "; ".join(_flatten(detail))}
    return response


# --- OpenAPI -------------------------------------------------------------------------------


def schema_only_v1(endpoints: list, **kwargs) -> list:
    """drf-spectacular preprocessing hook: the published schema is the versioned REST API."""
    return [entry for entry in endpoints if entry[0].startswith("/api/v1/")]
