"""What the console shows about the machine: collected with psutil, cheap enough for every hello."""

from __future__ import annotations

import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from caisey_agent import __version__

_SKIP_FS = {"squashfs", "tmpfs", "devtmpfs", "overlay", "proc", "sysfs", "cgroup", "cgroup2", "nsfs", "tracefs"}


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}"


def _ips() -> list[str]:
    ips = []
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family in (socket.AF_INET, socket.AF_INET6) and not addr.address.startswith(
                ("127.", "::1", "fe80")
            ):
                ips.append(addr.address.split("%")[0])
    return sorted(set(ips))


def _disks() -> list[dict[str, Any]]:
    disks = []
    for part in psutil.disk_partitions(all=False):
        if part.fstype in _SKIP_FS:
            continue
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        disks.append(
            {
                "mount": part.mountpoint,
                "fstype": part.fstype,
                "total_gb": round(usage.total / 2**30, 1),
                "used_gb": round(usage.used / 2**30, 1),
                "percent": usage.percent,
            }
        )
    return disks[:20]


def context(hostname: str = "") -> dict[str, Any]:
    mem = psutil.virtual_memory()
    boot = psutil.boot_time()
    return {
        "hostname": hostname or socket.gethostname(),
        "os": platform.system(),
        "os_release": _os_release(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "ips": _ips(),
        "boot_time": boot,
        "uptime_seconds": int(time.time() - boot),
        "users": sorted({u.name for u in psutil.users()}),
        "cpu": {"count": psutil.cpu_count(), "percent": psutil.cpu_percent(interval=None)},
        "memory": {
            "total_mb": mem.total // 2**20,
            "used_mb": (mem.total - mem.available) // 2**20,
            "percent": mem.percent,
        },
        "disks": _disks(),
        "agent_version": __version__,
        "python": sys.version.split()[0],
        **_presence(),
    }


def _presence() -> dict[str, Any]:
    """Whether a user is logged in (what an approval policy's allow_without_user decides on)."""
    if sys.platform == "win32":
        from caisey_agent import desktop

        return desktop.presence()
    try:
        return {"user_logged_in": bool(psutil.users())}
    except (OSError, psutil.Error):
        return {"user_logged_in": None}


def metrics() -> dict[str, Any]:
    """Light telemetry for active-mode heartbeats."""
    mem = psutil.virtual_memory()
    return {"cpu_percent": psutil.cpu_percent(interval=None), "memory_percent": mem.percent}
