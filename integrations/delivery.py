"""Sending one webhook delivery, and the sweep that finds the due ones.

A delivery is claimed with a conditional UPDATE (attempts + 1, and a lease: ``next_attempt_at``
moved past the longest a send may take), sent outside any transaction (no lock or SQLite write
lock held across a network call), and its outcome written only if the claim is still ours. A
worker killed mid-send leaves the row due again when the lease ends: delivery is at least once,
receivers drop duplicates by the event id.

Every send is bounded: connect and read timeouts, one overall deadline for the whole exchange
(``asyncio.timeout``: a destination dripping its answer byte by byte is cut off too), redirects
not followed, at most WEBHOOK_MAX_RESPONSE_BYTES of the answer read, TLS verified. A destination
that fails is not tried again before its backoff (``WebhookEndpoint.retry_after``): its other
due rows wait without an attempt counted, so a hanging destination holds one worker per backoff
period, never one per event, and never delays another destination's rows.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from caisey import tenancy
from caisey.actors import Party
from caisey.errors import Rejected
from endpoints.models import SecurityEventKind
from endpoints.security_log import security_event_record
from integrations import formats, signing, ssrf
from integrations.models import PENDING_STATUSES, DeliveryStatus, WebhookDelivery, WebhookEndpoint
from integrations.secretbox import unseal

log = logging.getLogger(__name__)
USER_AGENT = "Caisey-Webhooks/1"


def conf(name: str):
    return settings.CAISEY[f"WEBHOOK_{name}"]


def backoff(attempts: int) -> timedelta:
    """Capped exponential backoff with jitter over its upper half: never an immediate retry of a
    destination that just failed, and no two destinations' retries in lockstep."""
    ceiling = min(float(conf("BACKOFF_CAP_S")), float(conf("BACKOFF_BASE_S")) * 2 ** max(attempts - 1, 0))
    return timedelta(seconds=ceiling / 2 + random.uniform(0, ceiling / 2))


def lease() -> timedelta:
    # Twice the longest exchange plus name resolution (not under the deadline) and the write.
    return timedelta(seconds=2 * float(conf("TOTAL_TIMEOUT_S")) + 5)


@dataclass
class Outcome:
    ok: bool
    status_code: int | None = None
    error: str = ""
    latency_ms: int | None = None


def signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    secrets = [unseal(endpoint.secret_current)]
    if endpoint.secret_previous and endpoint.previous_valid_until and endpoint.previous_valid_until > now:
        secrets.append(unseal(endpoint.secret_previous))
    return secrets


def request_parts(endpoint: WebhookEndpoint, delivery: WebhookDelivery, *, now: datetime) -> tuple[bytes, dict]:
    body = formats.render(endpoint.format, delivery.payload)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Caisey-Event": delivery.event_type,
        "Caisey-Event-Id": str(delivery.event_id),
        signing.HEADER: signing.signature_header(signing_secrets(endpoint, now), body),
    }
    return body, headers


async def _post(target: ssrf.Target, url: str, body: bytes, headers: dict) -> Outcome:
    timeout = httpx.Timeout(
        connect=float(conf("CONNECT_TIMEOUT_S")),
        read=float(conf("READ_TIMEOUT_S")),
        write=float(conf("READ_TIMEOUT_S")),
        pool=float(conf("CONNECT_TIMEOUT_S")),
    )
    # Connect to the address the guard checked (DNS answered once, for both), naming the host in
    # the Host header and as the TLS server name, which the certificate is verified against.
    pinned = httpx.URL(url).copy_with(host=target.address)
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    default_port = 443 if target.scheme == "https" else 80
    host_header = target.host if ":" not in target.host else f"[{target.host}]"
    headers = {**headers, "Host": host_header if target.port == default_port else f"{host_header}:{target.port}"}
    limit = int(conf("MAX_RESPONSE_BYTES"))
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, verify=True, trust_env=False) as client:
        request = client.build_request("POST", pinned, content=body, headers=headers, extensions=extensions)
        async with asyncio.timeout(float(conf("TOTAL_TIMEOUT_S"))):
            response = await client.send(request, stream=True)
            try:
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= limit:
                        break  # the rest is not read: the connection is closed with the client
            finally:
                await response.aclose()
    latency = int((time.monotonic() - started) * 1000)
    if 200 <= response.status_code < 300:
        return Outcome(ok=True, status_code=response.status_code, latency_ms=latency)
    why = f"answered HTTP {response.status_code}"
    if response.is_redirect:
        why += " (a redirect; webhooks do not follow redirects)"
    return Outcome(ok=False, status_code=response.status_code, error=why, latency_ms=latency)


def send(endpoint: WebhookEndpoint, delivery: WebhookDelivery) -> Outcome:
    """One attempt; never raises for what the destination does."""
    started = time.monotonic()
    try:
        target = ssrf.resolve(endpoint.url, allow_private=endpoint.allow_private)
        body, headers = request_parts(endpoint, delivery, now=timezone.now())
        return asyncio.run(_post(target, endpoint.url, body, headers))
    except Rejected as exc:
        return Outcome(ok=False, error=f"refused: {exc}")
    except TimeoutError:
        return Outcome(
            ok=False,
            error=f"no complete answer within {conf('TOTAL_TIMEOUT_S')} s",
            latency_ms=int((time.monotonic() - started) * 1000),
        )
    except httpx.TimeoutException as exc:
        return Outcome(
            ok=False, error=f"timed out ({type(exc).__name__})", latency_ms=int((time.monotonic() - started) * 1000)
        )
    except httpx.HTTPError as exc:
        # Refused connections, TLS failures (bad certificate), connections closed mid-answer.
        return Outcome(ok=False, error=f"{type(exc).__name__}: {exc}"[:1000])


def deliver(delivery_id: int) -> str:
    """Send one delivery if it is due and not taken; returns what happened (for logs and tests).
    Idempotent: a delivered, given-up, not-yet-due or claimed row is left alone."""
    now = timezone.now()
    # A task: any tenant's row, by its id; its tenant is bound for every write below.
    with tenancy.system():
        delivery = WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None or delivery.status not in PENDING_STATUSES:
        return "done"
    endpoint = delivery.endpoint
    with tenancy.bind(delivery.tenant_id):
        if not endpoint.enabled:
            return "destination disabled"  # kept queued: sent if the destination is enabled again
        if delivery.next_attempt_at > now:
            return "not due"
        if endpoint.retry_after and endpoint.retry_after > now:
            # The destination is cooling off after a failure: wait with it, no attempt counted.
            WebhookDelivery.objects.filter(pk=delivery.pk, attempts=delivery.attempts).update(
                next_attempt_at=endpoint.retry_after
            )
            return "destination backing off"
        claimed = WebhookDelivery.objects.filter(
            pk=delivery.pk, status__in=PENDING_STATUSES, attempts=delivery.attempts, next_attempt_at__lte=now
        ).update(attempts=F("attempts") + 1, next_attempt_at=now + lease())
        if not claimed:
            return "taken"
    attempt = delivery.attempts + 1
    outcome = send(endpoint, delivery)
    return record(delivery, endpoint, attempt, outcome)


def record(delivery: WebhookDelivery, endpoint: WebhookEndpoint, attempt: int, outcome: Outcome) -> str:
    now = timezone.now()
    mine = Q(pk=delivery.pk, attempts=attempt, status__in=PENDING_STATUSES)
    with transaction.atomic(), tenancy.bind(delivery.tenant_id):
        common = {
            "last_status_code": outcome.status_code,
            "latency_ms": outcome.latency_ms,
            "last_error": outcome.error,
        }
        if outcome.ok:
            WebhookDelivery.objects.filter(mine).update(status=DeliveryStatus.DELIVERED, delivered_at=now, **common)
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=None, retry_after=None)
            return "delivered"
        given_up = attempt >= int(conf("MAX_ATTEMPTS"))
        retry_at = now + backoff(attempt)
        WebhookDelivery.objects.filter(mine).update(
            status=DeliveryStatus.GIVEN_UP if given_up else DeliveryStatus.FAILED,
            next_attempt_at=now if given_up else retry_at,
            **common,
        )
        WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=True).update(failing_since=now)
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(retry_after=retry_at)
        failing_since = WebhookEndpoint.objects.values_list("failing_since", flat=True).get(pk=endpoint.pk)
        limit = timedelta(seconds=float(conf("DISABLE_AFTER_S")))
        if failing_since and now - failing_since >= limit:
            endpoint_disable(endpoint=endpoint, why=f"every delivery failed for {limit} (last: {outcome.error})"[:300])
        log.info("webhook delivery %s attempt %s failed: %s", delivery.pk, attempt, outcome.error)
        return "given up" if given_up else "failed"


def endpoint_disable(*, endpoint: WebhookEndpoint, why: str) -> bool:
    """Turn a destination off after failing too long, and tell the tenant's admins (their
    security log). Runs in the caller's transaction with the tenant bound."""
    if not WebhookEndpoint.objects.filter(pk=endpoint.pk, enabled=True).update(enabled=False, disabled_reason=why):
        return False
    security_event_record(
        tenant_id=endpoint.tenant_id,
        kind=SecurityEventKind.WEBHOOK_DISABLED,
        actor=Party.SYSTEM,
        target=f"webhook {endpoint.description or urlsplit(endpoint.url).hostname}"[:300],  # never the URL
        detail={"webhook": str(endpoint.pk), "why": why},
    )
    return True


def due_deliveries(*, limit: int = 500) -> list[int]:
    """Ids of the rows due now whose destination is enabled and not backing off, oldest first.
    On PostgreSQL the rows are locked with SKIP LOCKED while they are read, so sweeps running at
    once hand out disjoint sets; the claim in ``deliver`` settles any remaining race."""
    now = timezone.now()
    with transaction.atomic(), tenancy.system():  # the sweep: every tenant's due rows
        qs = (
            WebhookDelivery.objects.filter(
                status__in=PENDING_STATUSES, next_attempt_at__lte=now, endpoint__enabled=True
            )
            .filter(Q(endpoint__retry_after__isnull=True) | Q(endpoint__retry_after__lte=now))
            .order_by("next_attempt_at", "id")
        )
        if transaction.get_connection().features.has_select_for_update_skip_locked:
            qs = qs.select_for_update(skip_locked=True, of=("self",))
        return list(qs.values_list("pk", flat=True)[:limit])
