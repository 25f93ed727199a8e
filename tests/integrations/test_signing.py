from __future__ import annotations

import hashlib
import hmac

from integrations import signing

BODY = b'{"id":"e1","type":"session.opened"}'


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body():
    header = signing.signature_header(["whsec_a"], BODY, timestamp=1_700_000_000)
    expected = hmac.new(b"whsec_a", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert signing.verify("whsec_a", header, BODY, now=1_700_000_000)


def test_a_wrong_secret_an_altered_body_or_a_stale_timestamp_fails():
    header = signing.signature_header(["whsec_a"], BODY, timestamp=1_700_000_000)
    assert not signing.verify("whsec_b", header, BODY, now=1_700_000_000)
    assert not signing.verify("whsec_a", header, BODY + b" ", now=1_700_000_000)
    # The replay window is five minutes either way.
    assert signing.verify("whsec_a", header, BODY, now=1_700_000_000 + 300)
    assert not signing.verify("whsec_a", header, BODY, now=1_700_000_000 + 301)
    assert not signing.verify("whsec_a", header, BODY, now=1_700_000_000 - 301)
    assert not signing.verify("whsec_a", "v1=" + header.split("v1=")[1], BODY, now=1_700_000_000)


def test_during_a_rotation_both_secrets_verify():
    header = signing.signature_header(["whsec_new", "whsec_old"], BODY, timestamp=1_700_000_000)
    assert header.count("v1=") == 2
    assert signing.verify("whsec_new", header, BODY, now=1_700_000_000)
    assert signing.verify("whsec_old", header, BODY, now=1_700_000_000)
    assert not signing.verify("whsec_other", header, BODY, now=1_700_000_000)
