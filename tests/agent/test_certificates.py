"""http_check's certificate fields, read with the cryptography package."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from caisey_agent.diagnostics.network import certificate_fields


def _cert(subject: x509.Name, issuer: x509.Name, not_before, not_after, san=None) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    from cryptography.hazmat.primitives.serialization import Encoding

    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)


def _name(**attrs) -> x509.Name:
    oids = {"CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME, "C": NameOID.COUNTRY_NAME}
    return x509.Name([x509.NameAttribute(oids[k], v) for k, v in attrs.items()])


def test_names_dates_and_alternative_names():
    start = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    end = dt.datetime(2026, 4, 2, 3, 4, 5, tzinfo=dt.UTC)
    der = _cert(
        _name(C="DE", O="Müller GmbH", CN="www.example.test"),
        _name(O="Test CA", CN="Test Issuing CA 1"),
        start,
        end,
        [x509.DNSName("www.example.test"), x509.IPAddress(ipaddress.ip_address("10.1.2.3")), x509.DNSName("a.test")],
    )
    fields = certificate_fields(der)
    # Only CN and O, in the certificate's order; non-ASCII kept.
    assert fields["subject"] == "O=Müller GmbH, CN=www.example.test"
    assert fields["issuer"] == "O=Test CA, CN=Test Issuing CA 1"
    assert fields["subject_alt_names"] == ["www.example.test", "10.1.2.3", "a.test"]
    assert fields["not_before"] == start.timestamp()
    assert fields["not_after"] == end.timestamp()


def test_generalized_time_after_2049_and_no_san():
    # Dates from 2050 on are encoded as GeneralizedTime, not UTCTime.
    end = dt.datetime(2051, 6, 30, 23, 59, 59, tzinfo=dt.UTC)
    der = _cert(_name(CN="long-lived"), _name(CN="long-lived"), dt.datetime(2020, 1, 1, tzinfo=dt.UTC), end)
    fields = certificate_fields(der)
    assert fields["not_after"] == end.timestamp()
    assert fields["subject_alt_names"] == []
    assert fields["subject"] == fields["issuer"] == "CN=long-lived"


def test_garbage_is_a_value_error():
    with pytest.raises(ValueError):
        certificate_fields(b"\x30\x03\x02\x01\x00")
