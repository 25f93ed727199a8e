"""system_summary and pending_reboot."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import time

import psutil

from caisey_agent import __version__
from caisey_agent.diagnostics import IS_LINUX, IS_WINDOWS, Context, NotAvailable, Outcome
from caisey_agent.diagnostics.render import human_bytes, human_duration, iso, kv, table


def os_release() -> dict[str, str]:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                values = {}
                for line in fh:
                    key, sep, value = line.strip().partition("=")
                    if sep and key and not key.startswith("#"):
                        values[key] = value.strip().strip('"').strip("'")
                return values
        except OSError:
            continue
    return {}


def uptime() -> tuple[float, float]:
    boot = psutil.boot_time()
    return boot, max(0.0, time.time() - boot)


def system_summary(ctx: Context) -> Outcome:
    release = os_release()
    boot, up = uptime()
    cpu_percent = _cpu_busy(ctx, 0.5)
    try:
        load = [round(x, 2) for x in psutil.getloadavg()]
    except (AttributeError, OSError, RuntimeError):  # Windows: PDH counters, missing under Wine
        load = None
    vm = psutil.virtual_memory()
    swap, swap_error = swap_memory()
    disks = []
    for part in psutil.disk_partitions(all=False):
        if part.fstype in ("squashfs", "iso9660") or part.mountpoint.startswith("/snap/"):
            continue
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        disks.append(
            {
                "mountpoint": part.mountpoint,
                "device": part.device,
                "fstype": part.fstype,
                "total": usage.total,
                "used": usage.used,
                "free": usage.free,
                "percent": usage.percent,
            }
        )
    try:
        users = [
            {"name": u.name, "terminal": u.terminal, "host": u.host, "since": iso(u.started)} for u in psutil.users()
        ]
    except (OSError, psutil.Error):
        users = []
    try:
        freq = psutil.cpu_freq()
        mhz = round(freq.current) if freq else None
    except (OSError, NotImplementedError, FileNotFoundError):
        mhz = None
    data = {
        "hostname": socket.gethostname(),
        "os": {
            "system": platform.system(),
            "release": platform.release(),
            "version": platform.version(),
            "machine": platform.machine(),
            "name": release.get("PRETTY_NAME") or _windows_name() or platform.platform(),
        },
        "boot_time": iso(boot),
        "uptime_s": round(up),
        "cpu": {
            "logical": psutil.cpu_count(logical=True),
            "physical": psutil.cpu_count(logical=False),
            "percent": cpu_percent,
            "load_average": load,
            "mhz": mhz,
        },
        "memory": {"total": vm.total, "available": vm.available, "used": vm.used, "percent": vm.percent},
        "swap": swap,
        "disks": disks,
        "users": users,
        "process_count": _process_count(),
        "agent": {"version": __version__, "python": platform.python_version(), "pid": os.getpid()},
    }
    text = kv(
        [
            ("Host", data["hostname"]),
            ("OS", f"{data['os']['name']} ({data['os']['system']} {data['os']['release']}, {data['os']['machine']})"),
            ("Up", f"{human_duration(up)} (since {data['boot_time']})"),
            (
                "CPU",
                f"{data['cpu']['logical']} logical / {data['cpu']['physical']} physical, {cpu_percent:.1f}% busy"
                + (f", load {' '.join(str(x) for x in load)}" if load else ""),
            ),
            (
                "Memory",
                f"{human_bytes(vm.used)} used of {human_bytes(vm.total)} ({vm.percent:.0f}%), "
                f"{human_bytes(vm.available)} available",
            ),
            (
                "Swap",
                f"{human_bytes(swap['used'])} of {human_bytes(swap['total'])} ({swap['percent']:.0f}%)"
                if swap
                else f"unknown ({swap_error})",
            ),
            ("Processes", data["process_count"]),
            ("Users", ", ".join(sorted({u["name"] for u in users})) or "nobody logged in"),
        ]
    )
    if disks:
        text += "\n\n" + table(
            ["mount", "fs", "size", "used", "free", "use%"],
            [
                [
                    d["mountpoint"],
                    d["fstype"],
                    human_bytes(d["total"]),
                    human_bytes(d["used"]),
                    human_bytes(d["free"]),
                    f"{d['percent']:.0f}%",
                ]
                for d in disks
            ],
        )
    return Outcome(data=data, text=text)


def _cpu_busy(ctx: Context, seconds: float) -> float:
    """CPU busy % over the interval, from our own two samples (psutil.cpu_percent's state is shared)."""
    before = psutil.cpu_times()
    ctx.sleep(seconds)
    after = psutil.cpu_times()

    def _total(t) -> float:  # guest time is already counted in user time on Linux
        return sum(t) - getattr(t, "guest", 0) - getattr(t, "guest_nice", 0)

    total = _total(after) - _total(before)
    idle = (after.idle + getattr(after, "iowait", 0)) - (before.idle + getattr(before, "iowait", 0))
    return round(max(0.0, min(100.0, 100.0 * (1 - idle / total))), 1) if total > 0 else 0.0


def _windows_name() -> str:
    if not IS_WINDOWS:
        return ""
    from caisey_agent.diagnostics import windows

    return windows.os_name()  # never platform.platform(): it queries WMI, which crashes under Wine


def _process_count() -> int | None:
    try:
        return len(psutil.pids())
    except OSError:  # Wine: NtQuerySystemInformation(SystemProcessInformation) refused
        return None


def swap_memory() -> tuple[dict | None, str]:
    """(swap counters or None, why not). psutil reads the page file counters on Windows, which Wine lacks."""
    try:
        sw = psutil.swap_memory()
    except (OSError, RuntimeError, psutil.Error, AttributeError) as exc:
        return None, f"the swap counters cannot be read: {type(exc).__name__}: {exc}"
    return {"total": sw.total, "used": sw.used, "percent": sw.percent}, ""


# --- pending reboot -------------------------------------------------------------------


def pending_reboot(ctx: Context) -> Outcome:
    boot, up = uptime()
    if IS_WINDOWS:
        from caisey_agent.diagnostics import windows

        checks = windows.pending_reboot_checks()
    elif IS_LINUX:
        checks = _linux_checks(ctx)
    else:
        checks = [
            {"check": "reboot-required checks", "available": False, "detail": f"no known method on {platform.system()}"}
        ]
    usable = [c for c in checks if c["available"]]
    reasons = [c["detail"] for c in usable if c.get("pending")]
    if reasons:
        pending: bool | None = True
    elif usable:
        pending = False
    else:
        pending = None
    data = {"pending": pending, "reasons": reasons, "checks": checks, "boot_time": iso(boot), "uptime_s": round(up)}
    verdict = {
        True: "YES, a reboot is pending",
        False: "no reboot pending",
        None: "unknown (no method to tell is available on this endpoint)",
    }[pending]
    lines = [f"Pending reboot: {verdict}", f"Up {human_duration(up)} (since {iso(boot)})", ""]
    for c in checks:
        state = "n/a" if not c["available"] else ("pending" if c.get("pending") else "ok")
        lines.append(f"- {c['check']}: {state}: {c['detail']}")
    return Outcome(data=data, text="\n".join(lines))


def _linux_checks(ctx: Context) -> list[dict]:
    checks: list[dict] = []
    release = os_release()
    family = {release.get("ID", "")} | set(release.get("ID_LIKE", "").split())
    flag = "/var/run/reboot-required"
    if os.path.exists(flag):
        pkgs = []
        try:
            with open(flag + ".pkgs", encoding="utf-8", errors="replace") as fh:
                pkgs = sorted({line.strip() for line in fh if line.strip()})
        except OSError:
            pass
        detail = f"{flag} exists" + (f" (packages: {', '.join(pkgs[:20])})" if pkgs else "")
        checks.append(
            {"check": "reboot-required flag", "available": True, "pending": True, "detail": detail, "packages": pkgs}
        )
    elif family & {"debian", "ubuntu"}:
        checks.append(
            {"check": "reboot-required flag", "available": True, "pending": False, "detail": f"{flag} does not exist"}
        )
    else:
        checks.append(
            {
                "check": "reboot-required flag",
                "available": False,
                "detail": f"{flag} is a Debian/Ubuntu convention; this is {release.get('ID', 'unknown')}",
            }
        )
    if shutil.which("needs-restarting"):
        try:
            done = ctx.run(["needs-restarting", "-r"], timeout=60)
        except (NotAvailable, TimeoutError, OSError) as exc:
            checks.append({"check": "needs-restarting -r", "available": False, "detail": str(exc)})
        else:
            summary = (done.stdout.strip().splitlines() or [""])[0]
            if done.returncode in (0, 1):
                checks.append(
                    {
                        "check": "needs-restarting -r",
                        "available": True,
                        "pending": done.returncode == 1,
                        "detail": summary or f"exit code {done.returncode}",
                    }
                )
            else:
                checks.append(
                    {
                        "check": "needs-restarting -r",
                        "available": False,
                        "detail": f"exit code {done.returncode}: {done.stderr.strip()[:300]}",
                    }
                )
    elif family & {"rhel", "fedora", "centos"}:
        checks.append(
            {
                "check": "needs-restarting -r",
                "available": False,
                "detail": "needs-restarting is not installed (dnf-utils / yum-utils)",
            }
        )
    # A kernel newer than the running one installed under /lib/modules is a strong hint too.
    running = platform.release()
    try:
        installed = sorted(os.listdir("/lib/modules"))
    except OSError:
        installed = []
    if installed and running in installed:
        newer = [k for k in installed if _kernel_key(k) > _kernel_key(running)]
        checks.append(
            {
                "check": "installed kernels",
                "available": True,
                "pending": bool(newer),
                "detail": (
                    f"running {running}; newer installed: {', '.join(newer)}"
                    if newer
                    else f"running {running}, the newest installed"
                ),
            }
        )
    return checks


def _kernel_key(version: str) -> tuple:
    parts = []
    for token in version.replace("-", ".").replace("_", ".").split("."):
        parts.append((0, int(token), "") if token.isdigit() else (1, 0, token))
    return tuple(parts)
