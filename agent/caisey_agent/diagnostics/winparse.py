"""Parsing what Windows tools answer: pure functions, no Windows needed, tested on every platform.

The platform calls (PowerShell, ``wevtutil``, the registry, the Service Control Manager)
are in :mod:`caisey_agent.diagnostics.windows`; they hand their raw answer to the
functions here. The fixtures the tests feed these functions are in
``tests/agent/fixtures/windows/`` with a README that says where each came from.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import xml.etree.ElementTree as ET
from typing import Any


class EmptyAnswer(RuntimeError):
    """A Windows tool exited without printing anything where it must print a result.

    Every PowerShell script the agent runs ends in ``ConvertTo-Json`` of one object, so an
    empty answer never means "nothing found": it means the tool did not run the script
    (Wine's PowerShell is a stub that exits 0 silently) or broke before answering.
    """


def as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def parse_ps_json(stdout: str, stderr: str, returncode: int, what: str) -> Any:
    """The JSON a PowerShell script printed; RuntimeError on failure, EmptyAnswer on no answer."""
    if returncode != 0:
        raise RuntimeError(f"{what}: PowerShell failed (exit code {returncode}): {stderr.strip()[:500]}")
    text = stdout.strip().lstrip("\ufeff")
    if not text:
        raise EmptyAnswer(
            f"{what}: PowerShell exited {returncode} without printing anything; an empty answer is not a "
            "result (is this a real Windows PowerShell?)"
            + (f"; stderr: {stderr.strip()[:300]}" if stderr.strip() else "")
        )
    try:
        return json.loads(text)
    except ValueError as exc:
        raise RuntimeError(f"{what}: PowerShell printed something that is not JSON ({exc}): {text[:200]!r}") from None


_MS_DATE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")


def ps_date(value: Any) -> str | None:
    """ConvertTo-Json dates: '/Date(1700000000000)/' (Windows PowerShell 5.1) or ISO 8601 (PowerShell 7,
    or a script's own ToString('o')); also a DateTime object serialised with its 'value' and 'DateTime'."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        value = value.get("value", value.get("DateTime"))
        if value is None:
            return None
    if isinstance(value, str):
        m = _MS_DATE.match(value)
        if m:
            stamp = int(m.group(1)) / 1000
            if stamp <= 0:
                return None  # DateTime.MinValue and friends: "never"
            return dt.datetime.fromtimestamp(stamp, dt.UTC).isoformat().replace("+00:00", "Z")
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        if parsed.year < 1900:
            return None
        return parsed.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def age_days(iso_time: str | None, now: float) -> float | None:
    if not iso_time:
        return None
    try:
        stamp = dt.datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return round((now - stamp) / 86400, 1)


# --- services (Service Control Manager, via the Windows API) -----------------------------

# winsvc.h
SERVICE_STATES = {
    1: "Stopped",
    2: "StartPending",
    3: "StopPending",
    4: "Running",
    5: "ContinuePending",
    6: "PausePending",
    7: "Paused",
}
START_TYPES = {0: "Boot", 1: "System", 2: "Automatic", 3: "Manual", 4: "Disabled"}
PS_STATUS = {**SERVICE_STATES}
PS_START = {0: "Boot", 1: "System", 2: "Automatic", 3: "Manual", 4: "Disabled"}


def service_row(raw: dict) -> dict:
    """One service as the SCM describes it (pywin32's QueryServiceStatusEx and QueryServiceConfig
    values, or Get-Service's ConvertTo-Json fields) in the agent's shape."""
    state = raw.get("CurrentState", raw.get("Status"))
    start = raw.get("StartType")
    delayed = bool(raw.get("DelayedAutoStart"))
    row = {
        "name": raw.get("ServiceName", raw.get("Name")),
        "display_name": raw.get("DisplayName"),
        "status": SERVICE_STATES.get(state, state) if isinstance(state, int) else state,
        "start_type": START_TYPES.get(start, start) if isinstance(start, int) else start,
        "delayed_auto_start": delayed,
        "pid": raw.get("ProcessId") or None,
        "exit_code": raw.get("Win32ExitCode"),
        "service_exit_code": raw.get("ServiceSpecificExitCode"),
        "binary_path": raw.get("BinaryPathName"),
        "account": raw.get("ServiceStartName"),
    }
    if row["start_type"] == "Automatic" and delayed:
        row["start_type"] = "Automatic (delayed)"
    return row


def failed_automatic(rows: list[dict]) -> list[dict]:
    """Automatic services that are not running: what an outage check looks at first."""
    return [r for r in rows if str(r.get("start_type", "")).startswith("Automatic") and r.get("status") != "Running"]


# --- event logs (wevtutil qe /f:RenderedXml) ---------------------------------------------

EVENT_NS = "{http://schemas.microsoft.com/win/2004/08/events/event}"
LEVELS = {0: "LogAlways", 1: "Critical", 2: "Error", 3: "Warning", 4: "Information", 5: "Verbose"}
LEVEL_NUMBERS = {"critical": 1, "error": 2, "warning": 3, "information": 4, "verbose": 5}
CHANNEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._/\-]{0,254}$")
PROVIDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._\-]{0,254}$")


def event_query(
    *,
    levels: list[int] | None = None,
    providers: list[str] | None = None,
    event_ids: list[int] | None = None,
    since_ms: int | None = None,
    until_ms_ago: int | None = None,
) -> str:
    """The XPath filter ``wevtutil qe /q:`` takes (the same one the Event Viewer's "Filter Current Log" builds)."""
    parts = []
    if providers:
        for name in providers:
            if not PROVIDER.match(name):
                raise ValueError(f"{name!r} is not a valid event provider name")
        parts.append("Provider[" + " or ".join(f"@Name='{n}'" for n in providers) + "]")
    if levels:
        parts.append("(" + " or ".join(f"Level={int(n)}" for n in levels) + ")")
    if event_ids:
        parts.append("(" + " or ".join(f"EventID={int(n)}" for n in event_ids) + ")")
    if since_ms is not None:
        parts.append(f"TimeCreated[timediff(@SystemTime) <= {int(since_ms)}]")
    if until_ms_ago:
        parts.append(f"TimeCreated[timediff(@SystemTime) >= {int(until_ms_ago)}]")
    return "*[System[" + " and ".join(parts) + "]]" if parts else "*"


def parse_log_info(text: str) -> dict:
    """``wevtutil gli <channel>``: "name: value" lines (creationTime, fileSize, numberOfLogRecords...);
    numbers as ints. Empty when the tool printed nothing of the kind."""
    info: dict = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z]+", key.strip()):
            continue
        value = value.strip()
        info[key.strip()] = int(value) if value.isdigit() else value
    return info


def parse_events(xml_text: str, *, max_message: int = 2000) -> list[dict]:
    """Events printed by ``wevtutil qe ... /f:RenderedXml`` (one <Event> element after another, no root)."""
    text = xml_text.strip().lstrip("\ufeff")
    if not text:
        return []
    root = ET.fromstring(f"<Events>{text}</Events>")
    events = []
    for ev in root.findall(f"{EVENT_NS}Event"):
        system = ev.find(f"{EVENT_NS}System")
        if system is None:
            continue
        provider = system.find(f"{EVENT_NS}Provider")
        created = system.find(f"{EVENT_NS}TimeCreated")
        execution = system.find(f"{EVENT_NS}Execution")
        level_text = _text(system, "Level")
        level = int(level_text) if level_text and level_text.isdigit() else None
        rendering = ev.find(f"{EVENT_NS}RenderingInfo")
        message = _text(rendering, "Message") if rendering is not None else None
        rendered_level = _text(rendering, "Level") if rendering is not None else None
        data = {}
        event_data = ev.find(f"{EVENT_NS}EventData")
        if event_data is not None:
            for i, item in enumerate(event_data.findall(f"{EVENT_NS}Data")):
                data[item.get("Name") or f"param{i + 1}"] = item.text or ""
        events.append(
            {
                "time": _iso_event_time(created.get("SystemTime") if created is not None else None),
                "channel": _text(system, "Channel"),
                "provider": provider.get("Name") if provider is not None else None,
                "event_id": int(_text(system, "EventID") or 0),
                "level": level,
                "level_name": rendered_level or LEVELS.get(level, str(level)),
                "record_id": int(_text(system, "EventRecordID") or 0) or None,
                "computer": _text(system, "Computer"),
                "pid": int(execution.get("ProcessID"))
                if execution is not None and execution.get("ProcessID")
                else None,
                "message": (message or _fallback_message(data))[:max_message],
                "data": data,
            }
        )
    return events


def _text(node, tag: str) -> str | None:
    if node is None:
        return None
    child = node.find(f"{EVENT_NS}{tag}")
    return child.text.strip() if child is not None and child.text else None


def _fallback_message(data: dict) -> str:
    return "; ".join(f"{k}={v}" for k, v in data.items())


def _iso_event_time(value: str | None) -> str | None:
    if not value:
        return None
    # 2024-03-05T09:12:44.1234567Z: seven fractional digits, more than fromisoformat takes before 3.11
    m = re.match(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?Z?$", value)
    if not m:
        return value
    frac = (m.group(2) or "")[:7]
    return f"{m.group(1)}{frac}Z"


# --- pending reboot: every registry source -------------------------------------------------

HKLM = "HKLM"
REBOOT_SOURCES = (
    # (label, key, value or None for "the key exists", kind)
    (
        "Component Based Servicing",
        r"SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending",
        None,
        "key",
    ),
    (
        "Component Based Servicing (in progress)",
        r"SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootInProgress",
        None,
        "key",
    ),
    (
        "Component Based Servicing (packages)",
        r"SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\PackagesPending",
        None,
        "key",
    ),
    (
        "Windows Update",
        r"SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired",
        None,
        "key",
    ),
    (
        "Windows Update (post-reboot reporting)",
        r"SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\PostRebootReporting",
        None,
        "key",
    ),
    ("Windows Update (services pending)", r"SOFTWARE\Microsoft\Updates", "UpdateExeVolatile", "nonzero"),
    (
        "Pending file renames",
        r"SYSTEM\CurrentControlSet\Control\Session Manager",
        "PendingFileRenameOperations",
        "nonempty",
    ),
    (
        "Pending file renames (2)",
        r"SYSTEM\CurrentControlSet\Control\Session Manager",
        "PendingFileRenameOperations2",
        "nonempty",
    ),
    ("RunOnce DVDRebootSignal", r"SOFTWARE\Microsoft\Windows\CurrentVersion\RunOnce", "DVDRebootSignal", "exists"),
    ("Server Manager reboot attempts", r"SOFTWARE\Microsoft\ServerManager", "CurrentRebootAttempts", "exists"),
    ("Domain join", r"SYSTEM\CurrentControlSet\Services\Netlogon", "JoinDomain", "exists"),
    ("Domain join (SPN)", r"SYSTEM\CurrentControlSet\Services\Netlogon", "AvoidSpnSet", "exists"),
)
COMPUTER_NAME = r"SYSTEM\CurrentControlSet\Control\ComputerName\ComputerName"
ACTIVE_COMPUTER_NAME = r"SYSTEM\CurrentControlSet\Control\ComputerName\ActiveComputerName"


class Missing:
    """A registry key or value that does not exist (the reader's answer)."""


MISSING = Missing()


def reboot_checks(read) -> list[dict]:
    """Evaluate every pending-reboot source. ``read(key, value)`` returns the value's data,
    ``MISSING``, or raises OSError (no access); with value None it answers True/MISSING for the key."""
    checks = []
    for label, key, value, kind in REBOOT_SOURCES:
        where = f"{HKLM}\\{key}" + (f"\\{value}" if value else "")
        try:
            data = read(key, value)
        except OSError as exc:
            checks.append({"check": label, "available": False, "detail": f"{where}: {exc}"})
            continue
        if data is MISSING:
            checks.append({"check": label, "available": True, "pending": False, "detail": f"{where} does not exist"})
            continue
        if kind == "key" or kind == "exists":
            pending, detail = True, f"{where} exists"
        elif kind == "nonzero":
            pending = bool(data) and data != 0
            detail = f"{where} is {data!r}"
        else:  # nonempty (REG_MULTI_SZ)
            items = [d for d in as_list(data) if d]
            pending = bool(items)
            detail = f"{where} lists {len(items)} file operation(s)" if pending else f"{where} is empty"
        checks.append({"check": label, "available": True, "pending": pending, "detail": detail})
    try:
        wanted = read(COMPUTER_NAME, "ComputerName")
        active = read(ACTIVE_COMPUTER_NAME, "ComputerName")
    except OSError as exc:
        checks.append({"check": "Computer rename", "available": False, "detail": str(exc)})
    else:
        if wanted is MISSING or active is MISSING:
            checks.append({"check": "Computer rename", "available": False, "detail": "computer name keys not found"})
        else:
            pending = str(wanted).lower() != str(active).lower()
            checks.append(
                {
                    "check": "Computer rename",
                    "available": True,
                    "pending": pending,
                    "detail": f"renamed to {wanted} (active name {active})" if pending else f"name {active}",
                }
            )
    return checks


# --- registry values ------------------------------------------------------------------------

REG_TYPES = {
    0: "REG_NONE",
    1: "REG_SZ",
    2: "REG_EXPAND_SZ",
    3: "REG_BINARY",
    4: "REG_DWORD",
    5: "REG_DWORD_BIG_ENDIAN",
    6: "REG_LINK",
    7: "REG_MULTI_SZ",
    11: "REG_QWORD",
}
HIVES = {
    "HKLM": "HKEY_LOCAL_MACHINE",
    "HKEY_LOCAL_MACHINE": "HKEY_LOCAL_MACHINE",
    "HKU": "HKEY_USERS",
    "HKEY_USERS": "HKEY_USERS",
    "HKCC": "HKEY_CURRENT_CONFIG",
    "HKEY_CURRENT_CONFIG": "HKEY_CURRENT_CONFIG",
}
# What a technician may read by default: configuration, not secrets. The endpoint's policy.json
# can narrow this; nothing widens it to SAM, SECURITY or the LSA secrets.
DEFAULT_REGISTRY_ALLOW = (
    r"HKEY_LOCAL_MACHINE\SOFTWARE",
    r"HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Services",
    r"HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Control",
    r"HKEY_CURRENT_CONFIG",
)
REGISTRY_DENY = (
    r"HKEY_LOCAL_MACHINE\SAM",
    r"HKEY_LOCAL_MACHINE\SECURITY",
    r"HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Control\Lsa",
    r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Winlogon",
    r"HKEY_LOCAL_MACHINE\SOFTWARE\Policies\Microsoft\Cryptography",
)


def registry_path(path: str, allow: tuple[str, ...] = DEFAULT_REGISTRY_ALLOW) -> tuple[str, str]:
    """(hive, subkey) of an allowed registry path; ValueError when it is not allowed."""
    clean = path.strip().strip("\\").replace("/", "\\")
    if not clean or "\\\\" in clean or any(part in ("", ".", "..") for part in clean.split("\\")):
        raise ValueError(f"{path!r} is not a registry key path")
    hive_name, _, subkey = clean.partition("\\")
    hive = HIVES.get(hive_name.upper())
    if hive is None:
        raise ValueError(f"hive {hive_name!r} is not readable by the agent (allowed: HKLM, HKU, HKCC)")
    full = f"{hive}\\{subkey}".rstrip("\\").lower()
    for denied in REGISTRY_DENY:
        if full == denied.lower() or full.startswith(denied.lower() + "\\"):
            raise ValueError(f"{hive}\\{subkey} holds credentials or secrets; the agent never reads it")
    if not any(full == a.lower() or full.startswith(a.lower() + "\\") for a in allow):
        raise ValueError(f"{hive}\\{subkey} is not under an allowed registry path ({'; '.join(allow)})")
    return hive, subkey


def registry_value(data: Any, type_id: int) -> Any:
    """A registry value in JSON: binary as hex, the rest as Python gives it (str, int, list of str)."""
    if isinstance(data, (bytes, bytearray)):
        return data.hex()
    return data


# --- Windows Update, Defender, BitLocker (PowerShell, ConvertTo-Json) ------------------------


def windows_update(doc: dict, now: float) -> dict:
    """What the update script printed: hotfixes (Get-HotFix), pending updates (the Windows Update
    agent's COM searcher) and its last successful search/installation times."""
    hotfixes = []
    for h in as_list(doc.get("hotfixes")):
        hotfixes.append(
            {
                "id": h.get("HotFixID"),
                "description": h.get("Description"),
                "installed_on": ps_date(h.get("InstalledOn")),
                "installed_by": h.get("InstalledBy"),
            }
        )
    hotfixes.sort(key=lambda h: h["installed_on"] or "", reverse=True)
    pending = []
    for u in as_list(doc.get("pending")):
        pending.append(
            {
                "title": u.get("Title"),
                "kb": ["KB" + str(kb) for kb in as_list(u.get("KBArticleIDs"))],
                "severity": u.get("MsrcSeverity") or None,
                "reboot_required": bool(u.get("RebootRequired")),
                "downloaded": bool(u.get("IsDownloaded")),
            }
        )
    last_installed = hotfixes[0]["installed_on"] if hotfixes else None
    last_success = ps_date(doc.get("last_install_success"))
    return {
        "last_installed": last_installed,
        "last_installed_days_ago": age_days(last_installed, now),
        "last_install_success": last_success,
        "last_search_success": ps_date(doc.get("last_search_success")),
        "pending": pending,
        "pending_count": len(pending),
        "pending_security": sum(1 for u in pending if u["severity"] in ("Critical", "Important")),
        "search_error": doc.get("search_error") or None,
        "hotfixes": hotfixes[:20],
    }


def defender(doc: dict, now: float) -> dict:
    """Get-MpComputerStatus, converted to JSON."""
    sig_updated = ps_date(doc.get("AntivirusSignatureLastUpdated"))
    quick = ps_date(doc.get("QuickScanEndTime"))
    full = ps_date(doc.get("FullScanEndTime"))
    last_scan = max((t for t in (quick, full) if t), default=None)
    age = doc.get("AntivirusSignatureAge")
    return {
        "service_enabled": doc.get("AMServiceEnabled"),
        "antivirus_enabled": doc.get("AntivirusEnabled"),
        "real_time_protection": doc.get("RealTimeProtectionEnabled"),
        "tamper_protected": doc.get("IsTamperProtected"),
        "running_mode": doc.get("AMRunningMode"),
        "engine_version": doc.get("AMEngineVersion"),
        "signature_version": doc.get("AntivirusSignatureVersion"),
        "signature_updated": sig_updated,
        "signature_age_days": age if isinstance(age, int) and age < 65535 else age_days(sig_updated, now),
        "last_quick_scan": quick,
        "last_full_scan": full,
        "last_scan": last_scan,
        "last_scan_days_ago": age_days(last_scan, now),
    }


def defender_problems(d: dict) -> list[str]:
    problems = []
    if d["antivirus_enabled"] is False:
        problems.append("antivirus is disabled")
    if d["real_time_protection"] is False:
        problems.append("real-time protection is off")
    if d["signature_age_days"] is not None and d["signature_age_days"] > 7:
        problems.append(f"signatures are {d['signature_age_days']:g} days old")
    return problems


# Get-BitLockerVolume's enums as ConvertTo-Json prints them (numbers in 5.1).
BL_PROTECTION = {0: "Off", 1: "On", 2: "Unknown"}
BL_VOLUME_STATUS = {
    0: "FullyDecrypted",
    1: "FullyEncrypted",
    2: "EncryptionInProgress",
    3: "DecryptionInProgress",
    4: "EncryptionPaused",
    5: "DecryptionPaused",
}
BL_LOCK = {0: "Unlocked", 1: "Locked"}
BL_KEY_TYPES = {
    0: "Unknown",
    1: "Tpm",
    2: "ExternalKey",
    3: "NumericalPassword",
    4: "TpmPin",
    5: "TpmStartupKey",
    6: "TpmPinStartupKey",
    7: "PublicKey",
    8: "Password",
    9: "TpmNetworkKey",
    10: "AdAccountOrGroup",
}


def _enum(value: Any, table: dict) -> Any:
    return table.get(value, value) if isinstance(value, int) else value


def bitlocker(doc: Any) -> list[dict]:
    volumes = []
    for v in as_list(doc):
        protectors = [
            _enum(k.get("KeyProtectorType"), BL_KEY_TYPES)
            for k in as_list(v.get("KeyProtector"))
            if isinstance(k, dict)
        ]
        volumes.append(
            {
                "mount_point": v.get("MountPoint"),
                "volume_type": _enum(v.get("VolumeType"), {0: "OperatingSystem", 1: "FixedData", 2: "Data"}),
                "protection": _enum(v.get("ProtectionStatus"), BL_PROTECTION),
                "status": _enum(v.get("VolumeStatus"), BL_VOLUME_STATUS),
                "lock": _enum(v.get("LockStatus"), BL_LOCK),
                "encryption_percentage": v.get("EncryptionPercentage"),
                "encryption_method": v.get("EncryptionMethod"),
                "key_protectors": protectors,
            }
        )
    return volumes


# --- domain controller health: dcdiag and repadmin ------------------------------------------

_DCDIAG_TEST = re.compile(r"\.{3,}\s*(\S+)\s+(passed|failed)\s+test\s+(\S+)", re.IGNORECASE)


def parse_dcdiag(text: str) -> dict:
    """``dcdiag`` output (English): one line per test, '......................... DC01 passed test Connectivity'."""
    tests = []
    for line in text.splitlines():
        m = _DCDIAG_TEST.search(line)
        if m:
            tests.append({"target": m.group(1), "test": m.group(3), "passed": m.group(2).lower() == "passed"})
    failed = [t for t in tests if not t["passed"]]
    return {
        "tests": tests,
        "passed": len(tests) - len(failed),
        "failed": [f"{t['target']}: {t['test']}" for t in failed],
    }


_REPL_ROW = re.compile(r"^\s*(\S+)\s+(\S+)\s+(\d+)\s*/\s*(\d+)\s+(\d+)\s*(?:\((\d+)\))?\s*$")


def parse_replsummary(text: str) -> dict:
    """``repadmin /replsummary``: the Source DSA and Destination DSA tables (largest delta, fails/total, %, error)."""
    section = None
    rows = {"source": [], "destination": []}
    for line in text.splitlines():
        low = line.strip().lower()
        if low.startswith("source dsa"):
            section = "source"
            continue
        if low.startswith("destination dsa"):
            section = "destination"
            continue
        if section is None or not line.strip():
            continue
        m = re.match(r"^\s*(\S+)\s+(\S+|>60 days)\s+(\d+)\s*/\s*(\d+)\s+(\d+)\s*(.*)$", line)
        if m:
            rows[section].append(
                {
                    "dsa": m.group(1),
                    "largest_delta": m.group(2),
                    "fails": int(m.group(3)),
                    "total": int(m.group(4)),
                    "percent": int(m.group(5)),
                    "error": m.group(6).strip() or None,
                }
            )
    failing = sorted({r["dsa"] for part in rows.values() for r in part if r["fails"]})
    return {**rows, "failing": failing}


# --- tasklist (processes, when psutil cannot list them) ----------------------------------------


def parse_tasklist_csv(text: str) -> list[dict]:
    """``tasklist /fo csv /nh``: "Image Name","PID","Session Name","Session#","Mem Usage" (e.g. "12,345 K")."""
    import csv
    import io

    rows = []
    for rec in csv.reader(io.StringIO(text.strip().lstrip("\ufeff"))):
        if len(rec) < 5 or not rec[1].strip().isdigit():
            continue
        digits = re.sub(r"[^\d]", "", rec[4])
        rows.append(
            {
                "name": rec[0],
                "pid": int(rec[1]),
                "session": rec[2],
                "session_id": int(rec[3]) if rec[3].strip().isdigit() else None,
                "memory_rss": int(digits) * 1024 if digits else None,
            }
        )
    return rows


# --- IIS (appcmd list site|apppool /xml) ------------------------------------------------------------


def parse_appcmd_sites(xml_text: str) -> list[dict]:
    """``appcmd list site /xml``: <appcmd><SITE SITE.NAME=".." SITE.ID=".." bindings=".." state=".."/></appcmd>."""
    root = ET.fromstring(xml_text.strip().lstrip("\ufeff"))
    sites = []
    for site in root.iter("SITE"):
        bindings = []
        for b in (site.get("bindings") or "").split(","):
            if not b:
                continue
            proto, _, info = b.partition("/")
            bindings.append({"protocol": proto, "binding": info})
        sites.append(
            {
                "name": site.get("SITE.NAME"),
                "id": int(site.get("SITE.ID") or 0),
                "state": site.get("state"),
                "bindings": bindings,
            }
        )
    return sites


def parse_appcmd_pools(xml_text: str) -> list[dict]:
    """``appcmd list apppool /xml``: <APPPOOL APPPOOL.NAME=".." PipelineMode=".." RuntimeVersion=".." state=".."/>."""
    root = ET.fromstring(xml_text.strip().lstrip("\ufeff"))
    return [
        {
            "name": pool.get("APPPOOL.NAME"),
            "state": pool.get("state"),
            "pipeline_mode": pool.get("PipelineMode"),
            "runtime_version": pool.get("RuntimeVersion") or None,
        }
        for pool in root.iter("APPPOOL")
    ]


# --- SQL Server: the TDS pre-login handshake ----------------------------------------------------------

TDS_PRELOGIN = 0x12
TDS_RESPONSE = 0x04
ENCRYPTION = {0: "off", 1: "on", 2: "not supported", 3: "required"}


def tds_prelogin_packet() -> bytes:
    """A TDS 7.x PRELOGIN request (MS-TDS 2.2.6.5): VERSION, ENCRYPTION (off), INSTOPT, THREADID, MARS."""
    options = [
        (0x00, b"\x00\x00\x00\x00\x00\x00"),
        (0x01, b"\x00"),
        (0x02, b"\x00"),
        (0x03, b"\x00\x00\x00\x00"),
        (0x04, b"\x00"),
    ]
    header_len = 5 * len(options) + 1
    table, data = b"", b""
    for token, value in options:
        table += bytes([token]) + (header_len + len(data)).to_bytes(2, "big") + len(value).to_bytes(2, "big")
        data += value
    payload = table + b"\xff" + data
    return bytes([TDS_PRELOGIN, 0x01]) + (8 + len(payload)).to_bytes(2, "big") + b"\x00\x00\x01\x00" + payload


def parse_tds_prelogin(packet: bytes) -> dict:
    """The server's PRELOGIN answer: its version (major.minor.build) and encryption setting."""
    if len(packet) < 8 or packet[0] != TDS_RESPONSE:
        raise ValueError("not a TDS response (is this port a SQL Server?)")
    payload = packet[8:]
    options = {}
    i = 0
    while i < len(payload) and payload[i] != 0xFF:
        if i + 5 > len(payload):
            raise ValueError("truncated PRELOGIN option table")
        token, offset, length = (
            payload[i],
            int.from_bytes(payload[i + 1 : i + 3], "big"),
            int.from_bytes(payload[i + 3 : i + 5], "big"),
        )
        options[token] = payload[offset : offset + length]
        i += 5
    version = options.get(0x00, b"")
    if len(version) < 4:
        raise ValueError("PRELOGIN answer without a version")
    build = int.from_bytes(version[2:4], "big")
    encryption = options.get(0x01, b"\x02")
    return {
        "version": f"{version[0]}.{version[1]}.{build}",
        "major": version[0],
        "encryption": ENCRYPTION.get(encryption[0], str(encryption[0])) if encryption else None,
    }


SQL_MAJOR = {
    16: "SQL Server 2022",
    15: "SQL Server 2019",
    14: "SQL Server 2017",
    13: "SQL Server 2016",
    12: "SQL Server 2014",
    11: "SQL Server 2012",
}
