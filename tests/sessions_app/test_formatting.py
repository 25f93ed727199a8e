"""The human formatters of the client's record (sessions_app/formatting.py): durations, sizes,
numbers without float noise, times with their zone, field names and values, actors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sessions_app import formatting as fmt


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (47.620999999999995, "48 ms"),
        (0.2, "under 1 ms"),
        (0, "0 ms"),
        (999.4, "999 ms"),
        (1234, "1.2 s"),
        (9_960, "10 s"),
        (42_000, "42 s"),
        (125_000, "2 min 5 s"),
        (120_000, "2 min"),
        (3_720_000, "1 h 2 min"),
        (3_600_000, "1 h"),
        (93_600_000, "1 d 2 h"),
    ],
)
def test_durations_read_as_people_say_them(ms, text):
    assert fmt.duration_ms(ms) == text


def test_duration_in_seconds_and_nonsense_is_returned_as_is():
    assert fmt.duration_s(125) == "2 min 5 s"
    assert fmt.duration_s(0.048) == "48 ms"
    assert fmt.duration_s(-1) == "-1"
    assert fmt.duration_ms(float("nan")) == "nan"


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 bytes"),
        (1, "1 byte"),
        (999, "999 bytes"),
        (1_000, "1 KB"),
        (1_234, "1.2 KB"),
        (1_200_000, "1.2 MB"),
        (234_567_890, "235 MB"),
        (999_960, "1 MB"),
        (5_500_000_000, "5.5 GB"),
        (3e15, "3000 TB"),
    ],
)
def test_sizes_in_decimal_units(n, text):
    assert fmt.size(n) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (47.620999999999995, "47.62"),
        (3.0, "3"),
        (0.1 + 0.2, "0.3"),
        (0.000123, "0.00012"),
        (18456, "18456"),
        (True, "yes"),
    ],
)
def test_numbers_without_float_noise(value, text):
    assert fmt.number(value) == text


def test_times_name_their_zone(settings):
    moment = datetime(2026, 12, 4, 14, 20, 16, tzinfo=UTC)
    assert fmt.when(moment) == "4 Dec 2026, 14:20:16 UTC"
    assert fmt.clock(moment) == "14:20:16 UTC"
    settings.TIME_ZONE = "Europe/Zurich"
    assert fmt.when(moment) == "4 Dec 2026, 15:20:16 CET"
    assert fmt.when(None) == "" and fmt.clock(None) == ""


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (("latency_ms",), "Delivery time"),
        ("exit_code", "Exit code"),
        (("result", "text"), "Result"),
        (("params", "command"), "Command"),
        (("current", "read_latency_ms"), "Read latency"),
        (("output_bytes",), "Output"),
        (("disks", 0, "mount_point"), "Mount point"),
        ((), "Value"),
    ],
)
def test_field_names_lose_their_json_keys(path, text):
    assert fmt.label(path) == text


@pytest.mark.parametrize(
    ("key", "raw", "text"),
    [
        ("latency_ms", "47.620999999999995", "48 ms"),
        ("latency_p95_ms", "73798", "1 min 14 s"),
        ("timeout_s", "125", "2 min 5 s"),
        ("output_bytes", "1200000", "1.2 MB"),
        ("expires_at", "2026-12-04T14:20:16+00:00", "4 Dec 2026, 14:20:16 UTC"),
        ("deadline", "2026-12-04T14:20:16.123456+00:00", "4 Dec 2026, 14:20:16 UTC"),
        ("at", "2026-12-05T09:00:00+00:00", "5 Dec 2026, 09:00:00 UTC"),
        ("ratio", "0.30000000000000004", "0.3"),
        ("port", "443", "443"),
        ("status", "timed_out", "Timed out"),
        ("kind", "tcp_connect", "TCP connect test"),
        ("kind", "no_such_kind", "no_such_kind"),
        ("expires_at", "soon", "soon"),
        ("command", "ping -c 3 10.0.0.1", "ping -c 3 10.0.0.1"),
    ],
)
def test_values_are_read_by_their_name(key, raw, text):
    assert fmt.value((key,), raw) == text


def test_actors_by_name_and_parties_by_role():
    assert fmt.who("user:alice", {"alice": "Alice Smith"}) == "Alice Smith"
    assert fmt.who("user:bob") == "bob"
    assert fmt.who("agent") == "the endpoint"
    assert fmt.who("approver:it@client.example") == "your designated approver (it@client.example)"
    assert fmt.who("something-new") == "something-new"
