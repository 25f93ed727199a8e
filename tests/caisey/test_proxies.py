"""The client address behind a TLS proxy: believed from the configured proxies only (issue 11, item 8)."""

from __future__ import annotations

import pytest
from asgiref.testing import ApplicationCommunicator

from caisey import proxies

PROXY = "10.9.0.1"
ATTACKER, VICTIM = "203.0.113.66", "198.51.100.7"


def http_scope(path: str, *, peer: str, headers: dict[str, str]) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *((k.lower().encode(), v.encode()) for k, v in headers.items())],
        "client": (peer, 40000),
        "server": ("testserver", 80),
    }


async def status_of(app, path: str, *, peer: str, headers: dict[str, str]) -> int:
    communicator = ApplicationCommunicator(app, http_scope(path, peer=peer, headers=headers))
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await communicator.receive_output(timeout=30)
    while True:  # drain the body so the application finishes
        message = await communicator.receive_output(timeout=30)
        if not message.get("more_body"):
            break
    return start["status"]


async def seen_scope(trusted: list[str], *, peer: str, headers: dict[str, str]) -> dict:
    seen: dict = {}

    async def app(scope, receive, send):
        seen.update(scope)

    await proxies.behind(app, trusted)(http_scope("/", peer=peer, headers=headers), None, None)
    return seen


async def test_a_trusted_proxy_names_the_client_and_the_scheme():
    scope = await seen_scope(
        ["10.9.0.0/24"], peer=PROXY, headers={"X-Forwarded-For": VICTIM, "X-Forwarded-Proto": "https"}
    )
    assert scope["client"][0] == VICTIM and scope["scheme"] == "https"


async def test_the_client_is_the_rightmost_address_the_trusted_proxy_added():
    """nginx appends the peer it saw: whatever the client wrote in front of it is not believed."""
    scope = await seen_scope([PROXY], peer=PROXY, headers={"X-Forwarded-For": f"1.2.3.4, {ATTACKER}"})
    assert scope["client"][0] == ATTACKER


@pytest.mark.parametrize("trusted", [[], ["10.9.0.2"]])
async def test_headers_from_anyone_else_are_ignored(trusted):
    scope = await seen_scope(trusted, peer=PROXY, headers={"X-Forwarded-For": VICTIM, "X-Forwarded-Proto": "https"})
    assert scope["client"][0] == PROXY and scope["scheme"] == "http"


def test_a_trusted_proxy_that_is_not_an_address_is_refused(tmp_path):
    from tests.caisey.test_settings import DEV, refused

    assert "CAISEY_TRUSTED_PROXIES" in refused(tmp_path, **DEV, CAISEY_TRUSTED_PROXIES="10.0.0.1,proxy.example")


@pytest.mark.django_db(transaction=True)
async def test_one_client_guessing_share_tokens_behind_the_proxy_does_not_lock_out_the_others(settings):
    """Was: every request through the proxy counted against the proxy's address, so one client
    guessing share tokens exhausted the budget of all of them (429 for every link)."""
    from caisey.asgi import router

    settings.CAISEY = {**settings.CAISEY, "RATE_SHARE_PER_IP": (2, 60)}  # per address: 2 x 10
    app = proxies.behind(router, [PROXY])
    statuses = [
        await status_of(app, f"/share/shr_{i:04d}guess{'x' * 40}/", peer=PROXY, headers={"X-Forwarded-For": ATTACKER})
        for i in range(21)
    ]
    assert statuses[-1] == 429 and set(statuses[:-1]) == {404}, statuses
    victim = await status_of(app, f"/share/shr_real{'y' * 40}/", peer=PROXY, headers={"X-Forwarded-For": VICTIM})
    assert victim == 404  # answered (an unknown link), not rate limited

    # Without the proxy trusted, the same two clients share the proxy's budget: what the defect was.
    settings.RATELIMIT_NAMESPACE += "-untrusted"
    untrusted = proxies.behind(router, [])
    for i in range(21):
        await status_of(
            untrusted, f"/share/shr_{i:04d}guess{'x' * 40}/", peer=PROXY, headers={"X-Forwarded-For": ATTACKER}
        )
    victim = await status_of(untrusted, f"/share/shr_real{'y' * 40}/", peer=PROXY, headers={"X-Forwarded-For": VICTIM})
    assert victim == 429
