"""Windows platform calls: PowerShell (ConvertTo-Json), wevtutil, the registry, the Service Control Manager.

The calls are thin; what they answer is parsed in :mod:`caisey_agent.diagnostics.winparse`,
which is tested on every platform against fixtures. Every PowerShell script here prints
exactly one JSON object, so an empty answer is an error (:class:`winparse.EmptyAnswer`),
never "nothing found". pywin32 and winreg are imported inside the functions that need them.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from typing import Any

from caisey_agent.diagnostics import Context, NotAvailable, Outcome
from caisey_agent.diagnostics import winparse as wp
from caisey_agent.diagnostics.render import kv, table

# Output as UTF-8 whatever the console code page is; stop on the first error.
_PRELUDE = (
    "$ProgressPreference = 'SilentlyContinue'; [Console]::OutputEncoding = [System.Text.Encoding]::UTF8; "
    "$ErrorActionPreference = 'Stop'; "
)
POWERSHELL_ARGS = ["-NoLogo", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-EncodedCommand"]


def powershell_exe() -> str | None:
    return shutil.which("powershell") or shutil.which("pwsh")


def encoded(script: str) -> str:
    """-EncodedCommand's argument: base64 of UTF-16LE, which no command-line quoting can break."""
    return base64.b64encode(script.encode("utf-16-le")).decode("ascii")


# --- shells ------------------------------------------------------------------------------------

SHELLS = ("powershell", "cmd")


def shell_argv(command: str, shell: str = "powershell", *, marker: str = "") -> list[str] | str:
    """What runs a technician's command line. PowerShell: an argv with -EncodedCommand; the script
    first writes ``marker`` (a file path) so the agent can tell a PowerShell that ran the command from
    one that only exited 0 (Wine's stub). cmd: a command line string for ``shell=True`` semantics
    (``%ComSpec% /c "command"``), because cmd does not take argv-style quoting."""
    if shell == "cmd":
        return command
    exe = powershell_exe() or "powershell.exe"
    script = _PRELUDE.replace("$ErrorActionPreference = 'Stop'; ", "")
    if marker:
        script += f"[IO.File]::WriteAllText({_quote(marker)}, 'started'); "
    script += command + "\nif (-not $?) { exit 1 }; if ($LASTEXITCODE) { exit $LASTEXITCODE }"
    return [exe, *POWERSHELL_ARGS, encoded(script)]


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


def ps_json(ctx: Context, script: str, *, timeout: float = 60, what: str = "PowerShell") -> Any:
    exe = powershell_exe()
    if exe is None:
        raise NotAvailable("PowerShell is not installed")
    done = ctx.run([exe, *POWERSHELL_ARGS, encoded(_PRELUDE + script)], timeout=timeout, what=what)
    return wp.parse_ps_json(done.stdout, done.stderr, done.returncode, what)


# --- services: the Service Control Manager through pywin32 ---------------------------------------


def _scm_services(name: str = "") -> list[dict]:
    try:
        import win32service
    except ImportError:
        raise NotAvailable("pywin32 (win32service) is not installed") from None
    scm = win32service.OpenSCManager(None, None, win32service.SC_MANAGER_ENUMERATE_SERVICE)
    try:
        if name:
            names = [name]
        else:
            names = [
                s["ServiceName"]
                for s in win32service.EnumServicesStatusEx(
                    scm, win32service.SERVICE_WIN32, win32service.SERVICE_STATE_ALL, None
                )
            ]
        rows = []
        for svc_name in names:
            try:
                handle = win32service.OpenService(
                    scm, svc_name, win32service.SERVICE_QUERY_STATUS | win32service.SERVICE_QUERY_CONFIG
                )
            except win32service.error as exc:
                if name and exc.winerror == 1060:  # ERROR_SERVICE_DOES_NOT_EXIST
                    return []
                continue
            try:
                status = win32service.QueryServiceStatusEx(handle)
                config = win32service.QueryServiceConfig(handle)
                try:
                    delayed = win32service.QueryServiceConfig2(
                        handle, win32service.SERVICE_CONFIG_DELAYED_AUTO_START_INFO
                    )
                except win32service.error:
                    delayed = False
                rows.append(
                    {
                        "ServiceName": svc_name,
                        "DisplayName": config[8],
                        "StartType": config[1],
                        "BinaryPathName": config[3],
                        "ServiceStartName": config[7],
                        "DelayedAutoStart": bool(delayed),
                        **{
                            k: status.get(k)
                            for k in ("CurrentState", "ProcessId", "Win32ExitCode", "ServiceSpecificExitCode")
                        },
                    }
                )
            finally:
                win32service.CloseServiceHandle(handle)
        return rows
    finally:
        win32service.CloseServiceHandle(scm)


def recent_service_failures(ctx: Context, hours: int = 24, name: str = "") -> list[dict] | str:
    """Service Control Manager events 7031/7034 (crashed), 7000/7009/7023/7024 (failed to start)."""
    query = wp.event_query(
        providers=["Service Control Manager"],
        event_ids=[7000, 7009, 7023, 7024, 7031, 7034],
        since_ms=hours * 3600 * 1000,
    )
    try:
        events = wevtutil_query(ctx, "System", query, 200)
    except (NotAvailable, RuntimeError, OSError) as exc:
        return str(exc)
    out = []
    for e in events:
        if name and name.lower() not in (e["message"] + " " + " ".join(e["data"].values())).lower():
            continue
        out.append({"time": e["time"], "event_id": e["event_id"], "message": e["message"][:500]})
    return out


def service_status(ctx: Context, name: str) -> Outcome:
    rows = [wp.service_row(r) for r in _scm_services(name)]
    failures = recent_service_failures(ctx, name=name)
    failures_note = failures if isinstance(failures, str) else None
    failures = failures if isinstance(failures, list) else []
    if name:
        if not rows:
            return Outcome(
                data={"service": None},
                text=f"Service {name} was not found.",
                ok=False,
                error=f"service {name!r} not found",
            )
        svc = rows[0]
        data = {"service": svc, "recent_failures": failures, "recent_failures_unavailable": failures_note}
        text = kv(
            [
                ("Service", f"{svc['name']} — {svc['display_name']}"),
                ("Status", svc["status"] + (f" (pid {svc['pid']})" if svc["pid"] else "")),
                ("Start type", svc["start_type"]),
                ("Account", svc["account"]),
                ("Last exit code", svc["exit_code"]),
                ("Failures (24 h)", len(failures) if failures_note is None else f"unknown: {failures_note}"),
            ]
        )
        return Outcome(data=data, text=text)
    failed = wp.failed_automatic(rows)
    data = {
        "failed_units": failed,
        "count": len(failed),
        "services_total": len(rows),
        "recent_failures": failures,
        "recent_failures_unavailable": failures_note,
    }
    if not failed:
        return Outcome(data=data, text=f"All automatic services of {len(rows)} are running.")
    return Outcome(
        data=data,
        text=f"{len(failed)} automatic service(s) not running:\n\n"
        + table(
            ["name", "status", "exit", "display name"],
            [[f["name"], f["status"], f["exit_code"], f["display_name"]] for f in failed],
        ),
    )


def service_restart(ctx: Context, name: str) -> Outcome:
    try:
        import win32serviceutil
    except ImportError:
        raise NotAvailable("pywin32 (win32serviceutil) is not installed") from None
    try:
        win32serviceutil.RestartService(name, waitSeconds=max(5, int(ctx.remaining() - 10)))
    except Exception as exc:  # noqa: BLE001 - pywintypes.error
        return Outcome(data={"service": None}, text=str(exc), ok=False, error=f"restart of {name} failed: {exc}")
    rows = [wp.service_row(r) for r in _scm_services(name)]
    svc = rows[0] if rows else None
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


# --- event logs ----------------------------------------------------------------------------------


def wevtutil_query(ctx: Context, channel: str, query: str, limit: int) -> list[dict]:
    if not wp.CHANNEL.match(channel):
        raise ValueError(f"{channel!r} is not a valid event log channel name")
    done = ctx.run(
        ["wevtutil", "qe", channel, f"/q:{query}", "/f:RenderedXml", "/rd:true", f"/c:{int(limit)}"],
        timeout=ctx.remaining(60),
        what="wevtutil (the Windows event log)",
    )
    if done.returncode != 0:
        raise RuntimeError(f"wevtutil failed (exit code {done.returncode}): {done.stderr.strip()[:500]}")
    events = wp.parse_events(done.stdout)
    if not events:
        # Nothing printed is "no event matches" only from an event log that answers: ask it about the
        # channel (Wine's wevtutil is a stub that prints nothing and exits 0 for everything).
        info = ctx.run(["wevtutil", "gli", channel], timeout=ctx.remaining(30), what="wevtutil (the Windows event log)")
        if wp.parse_log_info(info.stdout).get("numberOfLogRecords") is None:
            raise RuntimeError(
                f"wevtutil printed no event and nothing about the channel {channel} (wevtutil gli, exit code"
                f" {info.returncode}): the event log did not answer, which is not an empty result"
            )
    return events


def event_log_errors(ctx: Context, minutes: int, limit: int) -> tuple[str, int, list[dict]]:
    flt = "@{LogName='System','Application'; Level=1,2; StartTime=(Get-Date).AddMinutes(-%d)}" % minutes
    script = (
        f"$all = @(Get-WinEvent -FilterHashtable {flt} -MaxEvents 10000 -ErrorAction SilentlyContinue); "
        f"$top = $all | Select-Object -First {limit} | ForEach-Object {{ [pscustomobject]@{{ "
        "time = $_.TimeCreated.ToUniversalTime().ToString('o'); level = $_.LevelDisplayName; "
        "provider = $_.ProviderName; log = $_.LogName; id = $_.Id; message = $_.Message }} }}; "
        "[pscustomobject]@{ count = $all.Count; entries = @($top) } | ConvertTo-Json -Depth 4 -Compress"
    )
    result = ps_json(ctx, script, timeout=ctx.remaining(), what="Get-WinEvent")
    if not isinstance(result, dict):
        raise RuntimeError(f"Get-WinEvent: expected one object, PowerShell printed {type(result).__name__}")
    return event_log_entries(result)


def event_log_entries(result: dict) -> tuple[str, int, list[dict]]:
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
        for e in wp.as_list(result.get("entries"))
    ]
    return "Windows event log (System, Application; Critical and Error)", int(result.get("count") or 0), entries


# --- registry --------------------------------------------------------------------------------------


def _hive(winreg, name: str):
    return getattr(winreg, name)


def registry_reader():
    """read(key, value) for winparse.reboot_checks, over HKLM."""
    import winreg

    def read(key: str, value: str | None):
        try:
            with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, key) as handle:
                if value is None:
                    return True
                try:
                    return winreg.QueryValueEx(handle, value)[0]
                except FileNotFoundError:
                    return wp.MISSING
        except FileNotFoundError:
            return wp.MISSING

    return read


def pending_reboot_checks() -> list[dict]:
    try:
        read = registry_reader()
    except ImportError:
        return [{"check": "registry", "available": False, "detail": "winreg is not available"}]
    return wp.reboot_checks(read)


def registry_read(hive: str, subkey: str, value: str | None, max_values: int = 200) -> dict:
    import winreg

    root = _hive(winreg, hive)
    try:
        handle = winreg.OpenKey(root, subkey)
    except FileNotFoundError:
        return {"exists": False}
    with handle:
        if value is not None:
            try:
                data, type_id = winreg.QueryValueEx(handle, value)
            except FileNotFoundError:
                return {"exists": True, "value_exists": False}
            return {
                "exists": True,
                "value_exists": True,
                "value": {
                    "name": value,
                    "type": wp.REG_TYPES.get(type_id, str(type_id)),
                    "data": wp.registry_value(data, type_id),
                },
            }
        subkeys, values_count, modified = winreg.QueryInfoKey(handle)
        values = []
        for i in range(min(values_count, max_values)):
            name, data, type_id = winreg.EnumValue(handle, i)
            values.append(
                {
                    "name": name,
                    "type": wp.REG_TYPES.get(type_id, str(type_id)),
                    "data": wp.registry_value(data, type_id),
                }
            )
        keys = [winreg.EnumKey(handle, i) for i in range(min(subkeys, max_values))]
        return {
            "exists": True,
            "values": values,
            "subkeys": keys,
            "values_total": values_count,
            "subkeys_total": subkeys,
        }


# --- network (PowerShell's NetTCPIP cmdlets) -------------------------------------------------------


def default_routes(ctx: Context) -> list[dict]:
    doc = ps_json(
        ctx,
        "[pscustomobject]@{ routes = @(Get-NetRoute -DestinationPrefix '0.0.0.0/0','::/0' -ErrorAction "
        "SilentlyContinue | Select-Object InterfaceAlias,NextHop,RouteMetric,AddressFamily) } | ConvertTo-Json -Compress",
        timeout=30,
        what="Get-NetRoute",
    )
    return [
        {
            "family": "ipv6" if str(r.get("AddressFamily")) in ("23", "IPv6") else "ipv4",
            "gateway": r.get("NextHop"),
            "interface": r.get("InterfaceAlias"),
            "metric": r.get("RouteMetric"),
        }
        for r in wp.as_list(doc.get("routes"))
    ]


def dns_config(ctx: Context) -> dict:
    try:
        doc = ps_json(
            ctx,
            "[pscustomobject]@{ servers = @(Get-DnsClientServerAddress | Where-Object { $_.ServerAddresses } | "
            "Select-Object InterfaceAlias,ServerAddresses) } | ConvertTo-Json -Compress -Depth 4",
            timeout=30,
            what="Get-DnsClientServerAddress",
        )
    except (RuntimeError, NotAvailable) as exc:
        return _dns_from_dnspython(str(exc))
    servers: list[str] = []
    per_interface = {}
    for r in wp.as_list(doc.get("servers")):
        addrs = wp.as_list(r.get("ServerAddresses"))
        per_interface[r.get("InterfaceAlias")] = addrs
        servers += [a for a in addrs if a not in servers]
    return {"servers": servers, "per_interface": per_interface, "search": [], "source": "Get-DnsClientServerAddress"}


def _dns_from_dnspython(why: str) -> dict:
    """dnspython reads the resolver configuration from the registry: the answer when PowerShell has none."""
    try:
        import dns.resolver

        resolver = dns.resolver.Resolver(configure=True)
        return {
            "servers": list(resolver.nameservers),
            "search": [str(d) for d in resolver.search],
            "source": "registry (dnspython)",
            "powershell_error": why,
        }
    except Exception as exc:  # noqa: BLE001
        return {"servers": [], "search": [], "source": "unavailable", "error": f"{why}; dnspython: {exc}"}


# --- Windows Update, Defender, BitLocker -------------------------------------------------------------

UPDATE_SCRIPT = r"""
$hot = @(Get-HotFix | Select-Object HotFixID,Description,InstalledOn,InstalledBy)
$pending = @(); $searchError = $null
try {
  $session = New-Object -ComObject Microsoft.Update.Session
  $result = $session.CreateUpdateSearcher().Search("IsInstalled=0 and IsHidden=0")
  $pending = @($result.Updates | ForEach-Object { [pscustomobject]@{ Title = $_.Title; KBArticleIDs = @($_.KBArticleIDs);
    MsrcSeverity = $_.MsrcSeverity; RebootRequired = $_.RebootRequired; IsDownloaded = $_.IsDownloaded } })
} catch { $searchError = $_.Exception.Message }
$auto = $null; try { $auto = (New-Object -ComObject Microsoft.Update.AutoUpdate).Results } catch {}
[pscustomobject]@{ hotfixes = $hot; pending = $pending; search_error = $searchError;
  last_install_success = $(if ($auto) { $auto.LastInstallationSuccessDate.ToUniversalTime().ToString('o') });
  last_search_success = $(if ($auto) { $auto.LastSearchSuccessDate.ToUniversalTime().ToString('o') }) } |
  ConvertTo-Json -Depth 4 -Compress
"""


def windows_update(ctx: Context) -> dict:
    return wp.windows_update(ps_json(ctx, UPDATE_SCRIPT, timeout=ctx.remaining(), what="Windows Update"), time.time())


def defender(ctx: Context) -> dict:
    doc = ps_json(ctx, "Get-MpComputerStatus | ConvertTo-Json -Compress", timeout=60, what="Get-MpComputerStatus")
    return wp.defender(doc, time.time())


def bitlocker(ctx: Context) -> list[dict]:
    doc = ps_json(
        ctx,
        "[pscustomobject]@{ volumes = @(Get-BitLockerVolume | Select-Object MountPoint,VolumeType,ProtectionStatus,"
        "VolumeStatus,LockStatus,EncryptionPercentage,EncryptionMethod,KeyProtector) } | ConvertTo-Json -Depth 4 -Compress",
        timeout=60,
        what="Get-BitLockerVolume",
    )
    return wp.bitlocker(doc.get("volumes"))


# --- system: what psutil cannot answer everywhere (Wine) --------------------------------------------


def os_name() -> str:
    """The Windows version without platform.platform() (which queries WMI and crashes under Wine)."""
    import sys

    v = sys.getwindowsversion()
    product = ""
    try:
        import winreg

        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\Windows NT\CurrentVersion") as key:
            product = winreg.QueryValueEx(key, "ProductName")[0]
    except OSError:
        pass
    return f"{product or 'Windows'} (build {v.build}, {v.major}.{v.minor})"


def tasklist(ctx: Context) -> list[dict]:
    """Processes from ``tasklist /fo csv /nh`` when psutil cannot list them."""
    done = ctx.run(["tasklist", "/fo", "csv", "/nh"], timeout=30, what="tasklist")
    if done.returncode != 0:
        raise RuntimeError(f"tasklist failed (exit code {done.returncode}): {done.stderr.strip()[:300]}")
    return wp.parse_tasklist_csv(done.stdout)


def programdata() -> str:
    return os.environ.get("ProgramData", r"C:\ProgramData")
