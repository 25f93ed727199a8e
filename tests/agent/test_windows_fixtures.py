"""Every Windows diagnostic's parsing, on every platform, against the fixtures in fixtures/windows/
(written from Microsoft's documented formats, not recorded: see the README there)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from caisey_agent.diagnostics import processes, windiag, windows
from caisey_agent.diagnostics import winparse as wp

FIXTURES = Path(__file__).parent / "fixtures" / "windows"
# A fixed "now" for the ages: 2024-05-03T00:00:00Z.
NOW = dt.datetime(2024, 5, 3, tzinfo=dt.UTC).timestamp()


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


# --- PowerShell answers ----------------------------------------------------------------------


def test_parse_ps_json_errors_are_plain():
    with pytest.raises(wp.EmptyAnswer, match="without printing anything"):
        wp.parse_ps_json("  \r\n", "", 0, "Get-MpComputerStatus")
    with pytest.raises(RuntimeError, match=r"exit code 1\): Get-MpComputerStatus : Invalid class"):
        wp.parse_ps_json("", "Get-MpComputerStatus : Invalid class", 1, "Defender")
    with pytest.raises(RuntimeError, match="not JSON"):
        wp.parse_ps_json("WARNING: something", "", 0, "x")
    assert wp.parse_ps_json('\ufeff{"a": 1}\r\n', "", 0, "x") == {"a": 1}


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("/Date(1713945600000)/", "2024-04-24T08:00:00Z"),
        ("/Date(1713945600000+0200)/", "2024-04-24T08:00:00Z"),
        ("/Date(-62135596800000)/", None),  # DateTime.MinValue: never
        ("2024-04-16T03:12:40.0000000Z", "2024-04-16T03:12:40Z"),
        ({"value": "/Date(1705536000000)/", "DateTime": "Thursday..."}, "2024-01-18T00:00:00Z"),
        ("0001-01-01T00:00:00", None),
        (None, None),
    ],
)
def test_ps_dates(raw, expected):
    assert wp.ps_date(raw) == expected


# --- services ------------------------------------------------------------------------------------


def test_services_from_the_scm():
    rows = [wp.service_row(r) for r in json.loads(fixture("scm_services.json"))]
    spooler = rows[0]
    assert spooler == {
        "name": "Spooler",
        "display_name": "Print Spooler",
        "status": "Stopped",
        "start_type": "Automatic",
        "delayed_auto_start": False,
        "pid": None,
        "exit_code": 1067,
        "service_exit_code": 0,
        "binary_path": r"C:\Windows\System32\spoolsv.exe",
        "account": "LocalSystem",
    }
    assert rows[1]["status"] == "Running" and rows[1]["pid"] == 3120
    failed = wp.failed_automatic(rows)
    # Spooler (automatic, stopped) and sppsvc (delayed automatic, stopped); not wuauserv (manual).
    assert [r["name"] for r in failed] == ["Spooler", "sppsvc"]
    assert failed[1]["start_type"] == "Automatic (delayed)"


def test_service_status_outcome_with_recent_failures(monkeypatch):
    monkeypatch.setattr(windows, "_scm_services", lambda name="": json.loads(fixture("scm_services.json"))[:1])
    monkeypatch.setattr(
        windows, "wevtutil_query", lambda ctx, channel, query, limit: wp.parse_events(fixture("wevtutil_system.xml"))
    )
    out = windows.service_status(ctx=None, name="Spooler")
    assert out.ok
    assert out.data["service"]["status"] == "Stopped"
    # Only the SCM event naming the Print Spooler counts as its failure.
    assert [f["event_id"] for f in out.data["recent_failures"]] == [7031]
    assert "Failures (24 h)" in out.text


def test_service_not_found(monkeypatch):
    monkeypatch.setattr(windows, "_scm_services", lambda name="": [])
    monkeypatch.setattr(windows, "recent_service_failures", lambda ctx, name="": [])
    out = windows.service_status(ctx=None, name="NoSuchSvc")
    assert not out.ok and out.error == "service 'NoSuchSvc' not found"


# --- event logs ----------------------------------------------------------------------------------


def test_events_from_wevtutil():
    events = wp.parse_events(fixture("wevtutil_system.xml"))
    assert [e["event_id"] for e in events] == [7031, 7, 41]
    scm = events[0]
    assert scm["provider"] == "Service Control Manager"
    assert scm["level"] == 2 and scm["level_name"] == "Error"
    assert scm["time"] == "2024-05-02T08:14:09.523187Z"  # microseconds: what fromisoformat takes
    assert scm["computer"] == "SRV-FS01.corp.example" and scm["pid"] == 712 and scm["record_id"] == 48213
    assert scm["message"].startswith("The Print Spooler service terminated unexpectedly.")
    assert scm["data"]["param1"] == "Print Spooler"
    disk = events[1]
    assert disk["data"] == {"param1": r"\Device\Harddisk1\DR1"}
    # No RenderingInfo (the provider's message file is missing): the level's name and the data instead.
    power = events[2]
    assert power["level_name"] == "Critical"
    assert power["message"].startswith("BugcheckCode=0; BugcheckParameter1=0x0")


def test_no_events_is_an_empty_list_and_broken_xml_raises():
    assert wp.parse_events("") == []
    with pytest.raises(Exception):  # noqa: B017 - ElementTree.ParseError
        wp.parse_events("<Event><System>")


def test_event_query_from_parameters():
    channel, query, limit = windiag.event_log_query(
        {
            "channel": "Microsoft-Windows-TaskScheduler/Operational",
            "provider": "Microsoft-Windows-TaskScheduler",
            "levels": "critical, error",
            "event_ids": "101,103",
            "since_minutes": 120,
            "until_minutes_ago": 30,
            "limit": 20,
        }
    )
    assert channel == "Microsoft-Windows-TaskScheduler/Operational"
    assert query == (
        "*[System[Provider[@Name='Microsoft-Windows-TaskScheduler'] and (Level=1 or Level=2) and "
        "(EventID=101 or EventID=103) and TimeCreated[timediff(@SystemTime) <= 7200000] and "
        "TimeCreated[timediff(@SystemTime) >= 1800000]]]"
    )
    assert limit == 20


@pytest.mark.parametrize(
    "params, message",
    [
        ({"provider": "x'] or [1=1"}, "not a valid event provider"),
        ({"levels": "fatal"}, "levels: 'fatal'"),
        ({"event_ids": "7031,abc"}, "event_ids: 'abc'"),
        ({"channel": 'System" /f:xml'}, "not a valid event log channel"),
        ({"since_minutes": 10, "until_minutes_ago": 10}, "until_minutes_ago must be smaller"),
    ],
)
def test_event_query_refuses_injection_and_nonsense(params, message):
    with pytest.raises(ValueError, match=message):
        windiag.event_log_query(params)


def test_log_errors_entries_from_get_winevent():
    source, count, entries = windows.event_log_entries(json.loads(fixture("get_winevent_errors.json")))
    assert count == 2 and entries[0]["event_id"] == 7031 and entries[0]["unit"] == "System"
    assert entries[1]["message"] == r"The device, \Device\Harddisk1\DR1, has a bad block."


# --- pending reboot --------------------------------------------------------------------------------


def _registry(values: dict):
    def read(key, value):
        if (key, value) in values:
            result = values[(key, value)]
            if isinstance(result, Exception):
                raise result
            return result
        return wp.MISSING

    return read


def test_reboot_checks_every_source():
    cn = r"SYSTEM\CurrentControlSet\Control\ComputerName"
    read = _registry(
        {
            (
                r"SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending",
                None,
            ): True,
            (
                r"SYSTEM\CurrentControlSet\Control\Session Manager",
                "PendingFileRenameOperations",
            ): [r"\??\C:\Windows\Temp\old.dll", "", ""],
            (r"SOFTWARE\Microsoft\Updates", "UpdateExeVolatile"): 0,
            (r"SYSTEM\CurrentControlSet\Services\Netlogon", "JoinDomain"): PermissionError(5, "Access is denied"),
            (cn + r"\ComputerName", "ComputerName"): "SRV-FS02",
            (cn + r"\ActiveComputerName", "ComputerName"): "SRV-FS01",
        }
    )
    checks = {c["check"]: c for c in wp.reboot_checks(read)}
    assert len(checks) == len(wp.REBOOT_SOURCES) + 1
    assert checks["Component Based Servicing"]["pending"] is True
    assert checks["Pending file renames"] == {
        "check": "Pending file renames",
        "available": True,
        "pending": True,
        "detail": r"HKLM\SYSTEM\CurrentControlSet\Control\Session Manager\PendingFileRenameOperations lists "
        "1 file operation(s)",
    }
    assert checks["Windows Update (services pending)"]["pending"] is False
    assert checks["Windows Update"]["pending"] is False
    assert checks["Domain join"]["available"] is False and "Access is denied" in checks["Domain join"]["detail"]
    assert checks["Computer rename"]["pending"] is True
    assert "SRV-FS02" in checks["Computer rename"]["detail"]


# --- registry ------------------------------------------------------------------------------------


def test_registry_paths_allowed_and_refused():
    assert wp.registry_path(r"HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion") == (
        "HKEY_LOCAL_MACHINE",
        r"SOFTWARE\Microsoft\Windows NT\CurrentVersion",
    )
    assert wp.registry_path("hklm/system/CurrentControlSet/Services/Spooler")[0] == "HKEY_LOCAL_MACHINE"
    for path, why in [
        (r"HKLM\SAM\SAM\Domains", "secrets"),
        (r"HKLM\SECURITY\Policy\Secrets", "secrets"),
        (r"HKLM\SYSTEM\CurrentControlSet\Control\Lsa", "secrets"),
        (r"HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Winlogon", "secrets"),
        (r"HKCU\Software", "hive 'HKCU'"),
        (r"HKLM\SYSTEM\Setup", "not under an allowed"),
        (r"HKLM\SOFTWARE\..\SAM", "not a registry key path"),
    ]:
        with pytest.raises(ValueError, match=why):
            wp.registry_path(path)
    with pytest.raises(ValueError, match="not under an allowed"):
        wp.registry_path(r"HKLM\SOFTWARE\Vendor", allow=(r"HKEY_LOCAL_MACHINE\SOFTWARE\Other",))


def test_registry_outcomes():
    out = windiag.registry_outcome(
        r"HKEY_LOCAL_MACHINE\SOFTWARE\X",
        "Build",
        {"exists": True, "value_exists": True, "value": {"name": "Build", "type": "REG_SZ", "data": "20348"}},
    )
    assert out.ok and out.text.endswith("(REG_SZ) = '20348'")
    missing = windiag.registry_outcome(r"HKEY_LOCAL_MACHINE\SOFTWARE\Y", None, {"exists": False})
    assert not missing.ok and "does not exist" in missing.error
    assert wp.registry_value(b"\x01\xff", 3) == "01ff"


async def test_registry_read_refuses_before_touching_the_platform(tmp_path):
    from caisey_agent.state import AgentState
    from tests.agent.test_actions import FakeAgent, run_action

    state = AgentState(tmp_path / "s")
    try:
        _, result = await run_action(FakeAgent(state), "registry_read", {"path": r"HKLM\SAM\SAM"})
    finally:
        state.close()
    assert result.status == "failed" and "never reads it" in result.error


# --- Windows Update, Defender, BitLocker --------------------------------------------------------


def test_windows_update():
    data = wp.windows_update(json.loads(fixture("windows_update.json")), NOW)
    assert data["last_installed"] == "2024-04-16T00:00:00Z"
    assert data["last_installed_days_ago"] == 17.0
    assert [h["id"] for h in data["hotfixes"]] == ["KB5036896", "KB5034439", "KB5012170"]
    assert data["pending_count"] == 2 and data["pending_security"] == 1
    assert data["pending"][0]["kb"] == ["KB5037422"]
    assert data["last_search_success"] == "2024-05-02T06:00:02Z"
    out = windiag.windows_update_outcome(data)
    assert out.ok and "KB5037422" in out.text


def test_windows_update_search_failure_is_a_failed_check():
    doc = {**json.loads(fixture("windows_update.json")), "pending": [], "search_error": "0x8024402C"}
    out = windiag.windows_update_outcome(wp.windows_update(doc, NOW))
    assert not out.ok and "0x8024402C" in out.error


def test_defender():
    data = wp.defender(json.loads(fixture("get_mpcomputerstatus.json")), NOW)
    assert data["antivirus_enabled"] is True and data["real_time_protection"] is False
    assert data["signature_age_days"] == 9
    assert data["signature_updated"] == "2024-04-24T08:00:00Z"
    assert data["last_scan"] == "2024-05-01T09:00:00Z" and data["last_full_scan"] is None
    assert data["last_scan_days_ago"] == 1.6
    out = windiag.defender_outcome(data)
    assert not out.ok
    assert out.error == "Defender: real-time protection is off; signatures are 9 days old"


def test_bitlocker():
    volumes = wp.bitlocker(json.loads(fixture("get_bitlockervolume.json"))["volumes"])
    assert volumes[0] == {
        "mount_point": "C:",
        "volume_type": "OperatingSystem",
        "protection": "On",
        "status": "FullyEncrypted",
        "lock": "Unlocked",
        "encryption_percentage": 100,
        "encryption_method": "XtsAes128",
        "key_protectors": ["Tpm", "NumericalPassword"],
    }
    assert volumes[1]["protection"] == "Off" and volumes[1]["key_protectors"] == []
    out = windiag.bitlocker_outcome(volumes)
    assert out.data["unprotected"] == ["D:"]


# --- domain controllers --------------------------------------------------------------------------


def test_dcdiag_and_repadmin():
    diag = wp.parse_dcdiag(fixture("dcdiag.txt"))
    assert diag["passed"] == 9
    assert diag["failed"] == ["DC01: DFSREvent", "DC01: Replications"]
    repl = wp.parse_replsummary(fixture("repadmin_replsummary.txt"))
    assert repl["source"][1] == {
        "dsa": "DC02",
        "largest_delta": "02h:14m:55s",
        "fails": 5,
        "total": 10,
        "percent": 50,
        "error": "(1722) The RPC server is unavailable.",
    }
    assert len(repl["destination"]) == 2
    assert repl["failing"] == ["DC01", "DC02"]
    out = windiag.dc_health_outcome(diag, repl)
    assert not out.ok and "dcdiag failed DC01: Replications" in out.error


def test_dcdiag_without_tests_is_not_success():
    out = windiag.dc_health_outcome(wp.parse_dcdiag("Ldap search capability attribute search failed"), {"failing": []})
    assert not out.ok


# --- processes when psutil cannot list them ------------------------------------------------------


def test_tasklist():
    rows = wp.parse_tasklist_csv(fixture("tasklist.csv"))
    assert rows[3] == {
        "name": "sqlservr.exe",
        "pid": 3120,
        "session": "Services",
        "session_id": 0,
        "memory_rss": 1912344 * 1024,
    }
    out = processes.tasklist_outcome(rows, 2, "psutil: process list unavailable")
    assert [p["name"] for p in out.data["processes"]] == ["sqlservr.exe", "explorer.exe"]
    assert out.data["source"] == "tasklist"


# --- every Windows-only kind says so plainly elsewhere -------------------------------------------


@pytest.mark.parametrize("fn", [windiag.event_log, windiag.windows_update, windiag.defender_status, windiag.dc_health])
def test_windows_only_kinds_off_windows(fn):
    from caisey_agent.diagnostics import Context, NotAvailable
    from caisey_agent.policy import LocalPolicy

    with pytest.raises(NotAvailable, match="Windows endpoints only"):
        fn(Context(params={}, policy=LocalPolicy()))


# --- IIS and SQL Server -------------------------------------------------------------------------------


def test_iis_sites_and_pools():
    sites = wp.parse_appcmd_sites(fixture("appcmd_sites.xml"))
    assert sites[0] == {
        "name": "Default Web Site",
        "id": 1,
        "state": "Started",
        "bindings": [
            {"protocol": "http", "binding": "*:80:"},
            {"protocol": "https", "binding": "*:443:"},
            {"protocol": "net.tcp", "binding": "808:*"},
        ],
    }
    pools = wp.parse_appcmd_pools(fixture("appcmd_apppools.xml"))
    assert pools[1] == {
        "name": "IntranetPool",
        "state": "Stopped",
        "pipeline_mode": "Integrated",
        "runtime_version": None,
    }
    out = windiag.iis_outcome(sites, pools)
    assert not out.ok and out.error == "not started: Intranet, app pool IntranetPool"


def test_tds_prelogin_request_and_answer():
    request = wp.tds_prelogin_packet()
    assert request[0] == 0x12 and int.from_bytes(request[2:4], "big") == len(request)
    answer = wp.parse_tds_prelogin(bytes.fromhex(fixture("tds_prelogin_response.hex").strip()))
    assert answer == {"version": "16.0.2000", "major": 16, "encryption": "off"}
    with pytest.raises(ValueError, match="not a TDS response"):
        wp.parse_tds_prelogin(b"HTTP/1.1 400 Bad Request\r\n")


def test_sql_server_check_against_a_fake_server():
    """A listener that answers the recorded-format PRELOGIN response, as a SQL Server would."""
    import socket
    import threading

    from caisey_agent.diagnostics import Context
    from caisey_agent.policy import LocalPolicy

    response = bytes.fromhex(fixture("tds_prelogin_response.hex").strip())
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    got = []

    def serve():
        conn, _ = server.accept()
        with conn:
            got.append(conn.recv(4096))
            conn.sendall(response)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        out = windiag.sql_server_check(Context(params={"host": "127.0.0.1", "port": port}, policy=LocalPolicy()))
    finally:
        thread.join(5)
        server.close()
    assert got and got[0] == wp.tds_prelogin_packet()
    assert out.ok, out.error
    assert out.data["tds"]["product"] == "SQL Server 2022" and "16.0.2000" in out.text


def test_sql_server_check_when_nothing_answers():
    import socket

    from caisey_agent.diagnostics import Context
    from caisey_agent.policy import LocalPolicy

    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    out = windiag.sql_server_check(Context(params={"host": "127.0.0.1", "port": port}, policy=LocalPolicy()))
    assert not out.ok and f"no SQL Server answer on 127.0.0.1:{port}" in out.error


class ScriptedContext:
    """A diagnostic context whose tools answer from a script: {argv[1]: (exit code, stdout)}."""

    def __init__(self, answers: dict[str, tuple[int, str]]) -> None:
        self.answers, self.ran = answers, []

    def remaining(self, cap=None):
        return cap or 60

    def run(self, argv, *, timeout=None, what="", env=None):
        from caisey_agent.diagnostics import Completed

        self.ran.append(argv[:3])
        code, out = self.answers[argv[1]]
        return Completed(argv=argv, returncode=code, stdout=out, stderr="")


def test_no_event_is_an_answer_only_from_an_event_log_that_answers():
    """Wine's wevtutil prints nothing and exits 0 for every command (seen under bin/test-windows): an
    empty query result counts as "no event matches" only when `wevtutil gli` describes the channel."""
    assert wp.parse_log_info(fixture("wevtutil_gli_system.txt"))["numberOfLogRecords"] == 31846
    real = ScriptedContext({"qe": (0, ""), "gli": (0, fixture("wevtutil_gli_system.txt"))})
    assert windows.wevtutil_query(real, "System", "*", 5) == []
    assert real.ran == [["wevtutil", "qe", "System"], ["wevtutil", "gli", "System"]]

    stub = ScriptedContext({"qe": (0, ""), "gli": (0, "")})
    with pytest.raises(RuntimeError, match="the event log did not answer, which is not an empty result"):
        windows.wevtutil_query(stub, "System", "*", 5)

    with_events = ScriptedContext({"qe": (0, fixture("wevtutil_system.xml"))})
    assert len(windows.wevtutil_query(with_events, "System", "*", 5)) == 3
    assert with_events.ran == [["wevtutil", "qe", "System"]]  # events: no second call
