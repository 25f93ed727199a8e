"""Windows implementations (PowerShell, the registry, taskkill).

UNTESTED: written against the documented Windows PowerShell 5.1 cmdlets, but no
test runs them (the project's machines are Linux). Everything Windows-specific
lives here so the rest of the package stays platform-neutral.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from caisey_agent.diagnostics import Context, NotAvailable, Outcome
from caisey_agent.diagnostics.render import kv, table

# Output as UTF-8 whatever the console code page is.
_PRELUDE = "[Console]::OutputEncoding = [System.Text.Encoding]::UTF8; $ErrorActionPreference = 'Stop'; "


def powershell_exe() -> str:
    return shutil.which("powershell") or shutil.which("pwsh") or "powershell"


def shell_argv(command: str) -> list[str]:
    """The argv that runs a technician's command line."""
    return [
        powershell_exe(),
        "-NoProfile",
        "-NonInteractive",
        "-ExecutionPolicy",
        "Bypass",
        "-Command",
        "[Console]::OutputEncoding = [System.Text.Encoding]::UTF8; " + command,
    ]


def shell_popen_kwargs() -> dict[str, Any]:
    return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)}


def kill_tree(pid: int) -> None:
    """Kill a process and every process it started."""
    try:
        subprocess.run(
            ["taskkill", "/T", "/F", "/PID", str(pid)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        pass


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def ps_json(ctx: Context, script: str, *, timeout: float = 60) -> Any:
    if shutil.which("powershell") is None and shutil.which("pwsh") is None:
        raise NotAvailable("PowerShell is not installed")
    done = ctx.run(
        [powershell_exe(), "-NoProfile", "-NonInteractive", "-Command", _PRELUDE + script],
        timeout=timeout,
        what="PowerShell",
    )
    if done.returncode != 0:
        raise RuntimeError(f"PowerShell failed (exit code {done.returncode}): {done.stderr.strip()[:500]}")
    text = done.stdout.strip()
    if not text:
        return []
    value = json.loads(text)
    return value


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


_STATUS = {
    1: "Stopped",
    2: "StartPending",
    3: "StopPending",
    4: "Running",
    5: "ContinuePending",
    6: "PausePending",
    7: "Paused",
}
_START = {0: "Boot", 1: "System", 2: "Automatic", 3: "Manual", 4: "Disabled"}


def _service_row(s: dict) -> dict:
    status = s.get("Status")
    start = s.get("StartType")
    return {
        "name": s.get("Name"),
        "display_name": s.get("DisplayName"),
        "status": _STATUS.get(status, status) if isinstance(status, int) else status,
        "start_type": _START.get(start, start) if isinstance(start, int) else start,
    }


def service_status(ctx: Context, name: str) -> Outcome:
    if name:
        rows = _as_list(
            ps_json(
                ctx,
                f"Get-Service -Name {_quote(name)} | "
                "Select-Object Name,DisplayName,Status,StartType | ConvertTo-Json -Compress",
            )
        )
        if not rows:
            return Outcome(
                data={"service": None},
                text=f"Service {name} was not found.",
                ok=False,
                error=f"service {name!r} not found",
            )
        svc = _service_row(rows[0])
        return Outcome(
            data={"service": svc},
            text=kv(
                [
                    ("Service", f"{svc['name']} — {svc['display_name']}"),
                    ("Status", svc["status"]),
                    ("Start type", svc["start_type"]),
                ]
            ),
        )
    rows = _as_list(
        ps_json(
            ctx,
            "Get-CimInstance Win32_Service -Filter \"StartMode='Auto' AND State<>'Running'\" | "
            "Select-Object Name,DisplayName,State,StartMode,ExitCode | ConvertTo-Json -Compress",
        )
    )
    failed = [
        {
            "name": r.get("Name"),
            "display_name": r.get("DisplayName"),
            "status": r.get("State"),
            "start_type": r.get("StartMode"),
            "exit_code": r.get("ExitCode"),
        }
        for r in rows
    ]
    data = {"failed_units": failed, "count": len(failed)}
    if not failed:
        return Outcome(data=data, text="No automatic service is stopped.")
    return Outcome(
        data=data,
        text=f"{len(failed)} automatic service(s) not running:\n\n"
        + table(
            ["name", "status", "exit", "display name"],
            [[f["name"], f["status"], f["exit_code"], f["display_name"]] for f in failed],
        ),
    )


def service_restart(ctx: Context, name: str) -> Outcome:
    script = (
        f"Restart-Service -Name {_quote(name)} -Force; Start-Sleep -Seconds 1; "
        f"Get-Service -Name {_quote(name)} | Select-Object Name,DisplayName,Status,StartType | ConvertTo-Json -Compress"
    )
    try:
        rows = _as_list(ps_json(ctx, script, timeout=max(5.0, ctx.remaining() - 5)))
    except RuntimeError as exc:
        return Outcome(data={"service": None}, text=str(exc), ok=False, error=str(exc), exit_code=1)
    svc = _service_row(rows[0]) if rows else None
    text = kv([("Service", name), ("Status after restart", svc["status"] if svc else "unknown")])
    if not svc or svc["status"] != "Running":
        return Outcome(
            data={"service": svc},
            text=text,
            ok=False,
            exit_code=0,
            error=f"{name} is {svc['status'] if svc else 'unknown'} after the restart",
        )
    return Outcome(data={"service": svc}, text=text, exit_code=0)


def event_log_errors(ctx: Context, minutes: int, limit: int) -> tuple[str, int, list[dict]]:
    flt = "@{LogName='System','Application'; Level=1,2; StartTime=(Get-Date).AddMinutes(-%d)}" % minutes
    script = (
        f"$all = @(Get-WinEvent -FilterHashtable {flt} -MaxEvents 10000 -ErrorAction SilentlyContinue); "
        f"$top = $all | Select-Object -First {limit} | ForEach-Object {{ [pscustomobject]@{{ "
        "time = $_.TimeCreated.ToUniversalTime().ToString('o'); level = $_.LevelDisplayName; "
        "provider = $_.ProviderName; log = $_.LogName; id = $_.Id; message = $_.Message }} }}; "
        "[pscustomobject]@{ count = $all.Count; entries = @($top) } | ConvertTo-Json -Depth 4 -Compress"
    )
    result = ps_json(ctx, script, timeout=ctx.remaining())
    entries = [
        {
            "time": e.get("time"),
            "priority": (e.get("level") or "").lower(),
            "identifier": e.get("provider"),
            "unit": e.get("log"),
            "event_id": e.get("id"),
            "pid": None,
            "message": (e.get("message") or "")[:2000],
        }
        for e in _as_list(result.get("entries"))
    ]
    return "Windows event log (System, Application; Critical and Error)", int(result.get("count") or 0), entries


def pending_reboot_checks() -> list[dict]:
    try:
        import winreg
    except ImportError:
        return [{"check": "registry", "available": False, "detail": "winreg is not available"}]
    checks = []
    keys = [
        (
            "Component Based Servicing",
            r"SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending",
            None,
        ),
        ("Windows Update", r"SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired", None),
        ("Pending file renames", r"SYSTEM\CurrentControlSet\Control\Session Manager", "PendingFileRenameOperations"),
    ]
    for label, path, value in keys:
        try:
            with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, path) as key:
                if value is None:
                    pending, detail = True, f"HKLM\\{path} exists"
                else:
                    try:
                        data, _ = winreg.QueryValueEx(key, value)
                        pending = bool(data)
                        detail = f"HKLM\\{path}\\{value} is {'set' if pending else 'empty'}"
                    except FileNotFoundError:
                        pending, detail = False, f"HKLM\\{path}\\{value} is not set"
        except FileNotFoundError:
            pending, detail = False, f"HKLM\\{path} does not exist"
        except OSError as exc:
            checks.append({"check": label, "available": False, "detail": str(exc)})
            continue
        checks.append({"check": label, "available": True, "pending": pending, "detail": detail})
    return checks


def default_routes(ctx: Context) -> list[dict]:
    rows = _as_list(
        ps_json(
            ctx,
            "Get-NetRoute -DestinationPrefix '0.0.0.0/0','::/0' -ErrorAction SilentlyContinue | "
            "Select-Object InterfaceAlias,NextHop,RouteMetric,AddressFamily | ConvertTo-Json -Compress",
            timeout=30,
        )
    )
    return [
        {
            "family": "ipv6" if str(r.get("AddressFamily")) in ("23", "IPv6") else "ipv4",
            "gateway": r.get("NextHop"),
            "interface": r.get("InterfaceAlias"),
            "metric": r.get("RouteMetric"),
        }
        for r in rows
    ]


def dns_config(ctx: Context) -> dict:
    rows = _as_list(
        ps_json(
            ctx,
            "Get-DnsClientServerAddress | Where-Object { $_.ServerAddresses } | "
            "Select-Object InterfaceAlias,ServerAddresses | ConvertTo-Json -Compress",
            timeout=30,
        )
    )
    servers: list[str] = []
    per_interface = {}
    for r in rows:
        addrs = _as_list(r.get("ServerAddresses"))
        per_interface[r.get("InterfaceAlias")] = addrs
        servers += [a for a in addrs if a not in servers]
    return {"servers": servers, "per_interface": per_interface, "search": [], "source": "Get-DnsClientServerAddress"}
