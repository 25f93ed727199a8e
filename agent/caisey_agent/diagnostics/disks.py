"""disk_usage: space per volume and I/O latency per disk.

Latency is given two ways, both from psutil.disk_io_counters(perdisk=True):

- ``current``: two samples SAMPLE_S apart; average time per read / write completed
  in that interval (ms), operations per second, throughput and busy %.
  ``None`` when the disk completed no operation in the interval.
- ``since_boot``: the kernel's cumulative read_time / read_count (and write) since
  boot, i.e. the long-run average.
"""

from __future__ import annotations

import re
import time

import psutil

from caisey_agent.diagnostics import Context, Outcome
from caisey_agent.diagnostics.render import fmt, human_bytes, table

SAMPLE_S = 1.0
PSEUDO_FS = {"squashfs", "iso9660", "overlay", "tmpfs", "devtmpfs", "proc", "sysfs", "cgroup", "cgroup2"}
# Loop and RAM block devices are noise unless busy.
QUIET_DEVICES = re.compile(r"^(loop\d+|ram\d+|zram\d+|sr\d+)$")


def _volumes() -> list[dict]:
    volumes = []
    seen = set()
    partitions = psutil.disk_partitions(all=False)
    if not partitions:  # containers: the root overlay is only listed with all=True
        partitions = [p for p in psutil.disk_partitions(all=True) if p.mountpoint in ("/",)]
    for part in partitions:
        if part.mountpoint.startswith("/snap/") or (part.fstype in PSEUDO_FS and part.mountpoint != "/"):
            continue
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except (OSError, PermissionError) as exc:
            volumes.append(
                {"mountpoint": part.mountpoint, "device": part.device, "fstype": part.fstype, "error": str(exc)}
            )
            continue
        key = (part.device, usage.total, usage.used)
        if key in seen:  # bind mounts of the same filesystem
            continue
        seen.add(key)
        volumes.append(
            {
                "mountpoint": part.mountpoint,
                "device": part.device,
                "fstype": part.fstype,
                "options": part.opts,
                "total": usage.total,
                "used": usage.used,
                "free": usage.free,
                "percent": usage.percent,
            }
        )
    return volumes


def _ms_per_op(time_ms: float, count: int) -> float | None:
    return round(time_ms / count, 2) if count > 0 else None


def disk_usage(ctx: Context) -> Outcome:
    volumes = _volumes()
    try:
        first = psutil.disk_io_counters(perdisk=True) or {}
    except (OSError, RuntimeError, NotImplementedError):
        first = {}
    t0 = time.monotonic()
    if first:
        ctx.sleep(SAMPLE_S)
    try:
        second = psutil.disk_io_counters(perdisk=True) or {} if first else {}
    except (OSError, RuntimeError, NotImplementedError):
        second = {}
    elapsed = max(1e-6, time.monotonic() - t0)
    io = []
    for name, now in sorted(second.items()):
        before = first.get(name)
        if before is None:
            continue
        d_reads = now.read_count - before.read_count
        d_writes = now.write_count - before.write_count
        busy_ms = getattr(now, "busy_time", None)
        busy_pct = None
        if busy_ms is not None and getattr(before, "busy_time", None) is not None:
            busy_pct = round(min(100.0, (now.busy_time - before.busy_time) / (elapsed * 1000) * 100), 1)
        total_ops = now.read_count + now.write_count
        if QUIET_DEVICES.match(name) and d_reads == 0 and d_writes == 0:
            continue
        if total_ops == 0 and d_reads == 0 and d_writes == 0:
            continue
        io.append(
            {
                "disk": name,
                "current": {
                    "interval_s": round(elapsed, 2),
                    "reads_per_s": round(d_reads / elapsed, 1),
                    "writes_per_s": round(d_writes / elapsed, 1),
                    "read_bytes_per_s": round((now.read_bytes - before.read_bytes) / elapsed),
                    "write_bytes_per_s": round((now.write_bytes - before.write_bytes) / elapsed),
                    "read_latency_ms": _ms_per_op(now.read_time - before.read_time, d_reads),
                    "write_latency_ms": _ms_per_op(now.write_time - before.write_time, d_writes),
                    "busy_percent": busy_pct,
                },
                "since_boot": {
                    "reads": now.read_count,
                    "writes": now.write_count,
                    "read_bytes": now.read_bytes,
                    "write_bytes": now.write_bytes,
                    "read_latency_ms": _ms_per_op(now.read_time, now.read_count),
                    "write_latency_ms": _ms_per_op(now.write_time, now.write_count),
                },
            }
        )
    data = {
        "volumes": volumes,
        "io": io,
        "io_method": (
            f"current: two samples {SAMPLE_S:.0f}s apart; since_boot: cumulative kernel counters"
            if first
            else "per-disk I/O counters are not available on this endpoint"
        ),
    }
    parts = []
    full = [v for v in volumes if v.get("percent", 0) >= 90]
    if full:
        parts.append("Nearly full (>= 90%): " + ", ".join(f"{v['mountpoint']} {v['percent']:.0f}%" for v in full))
    parts.append(
        table(
            ["mount", "device", "fs", "size", "used", "free", "use%"],
            [
                [
                    v["mountpoint"],
                    v["device"],
                    v["fstype"],
                    human_bytes(v.get("total")),
                    human_bytes(v.get("used")),
                    human_bytes(v.get("free")),
                    f"{v['percent']:.0f}%" if "percent" in v else v.get("error", "-"),
                ]
                for v in volumes
            ],
        )
    )
    if io:
        parts.append(
            f"I/O over the last {elapsed:.1f}s (latency = average ms per completed operation; "
            "'boot' = average since boot):"
        )
        parts.append(
            table(
                ["disk", "r/s", "w/s", "read/s", "write/s", "r ms", "w ms", "busy%", "r ms boot", "w ms boot"],
                [
                    [
                        d["disk"],
                        fmt(d["current"]["reads_per_s"]),
                        fmt(d["current"]["writes_per_s"]),
                        human_bytes(d["current"]["read_bytes_per_s"]),
                        human_bytes(d["current"]["write_bytes_per_s"]),
                        fmt(d["current"]["read_latency_ms"], 2),
                        fmt(d["current"]["write_latency_ms"], 2),
                        fmt(d["current"]["busy_percent"]),
                        fmt(d["since_boot"]["read_latency_ms"], 2),
                        fmt(d["since_boot"]["write_latency_ms"], 2),
                    ]
                    for d in io
                ],
            )
        )
    else:
        parts.append("Per-disk I/O counters: " + ("no disk activity recorded" if first else "not available"))
    return Outcome(data=data, text="\n\n".join(parts))
