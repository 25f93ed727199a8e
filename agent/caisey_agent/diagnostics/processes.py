"""top_processes and listening_ports."""

from __future__ import annotations

import os
import socket
from collections import namedtuple

import psutil

from caisey_agent import platforms
from caisey_agent.diagnostics import Context, Outcome
from caisey_agent.diagnostics.render import human_bytes, iso, table

CPU_SAMPLE_S = 0.5
_Conn = namedtuple("_Conn", "family type laddr raddr status pid")


def top_processes(ctx: Context) -> Outcome:
    limit = int(ctx.params.get("limit", 15))
    try:
        return _top_processes(ctx)
    except OSError as exc:  # psutil's process list API failing as a whole (Wine: NtQuerySystemInformation)
        if not platforms.is_windows():
            raise
        return tasklist_fallback(ctx, limit, f"{type(exc).__name__}: {exc}")


def _top_processes(ctx: Context) -> Outcome:
    sort = ctx.params.get("sort", "cpu")
    limit = int(ctx.params.get("limit", 15))
    procs: dict[int, psutil.Process] = {}
    try:
        for proc in psutil.process_iter():
            try:
                proc.cpu_percent(None)  # prime the per-process CPU counter
                procs[proc.pid] = proc
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
    except (OSError, psutil.Error) as exc:
        if not platforms.is_windows():
            raise
        return tasklist_fallback(ctx, limit, f"{type(exc).__name__}: {exc}")
    ctx.sleep(CPU_SAMPLE_S)
    rows = []
    denied = 0
    for pid, proc in procs.items():
        try:
            with proc.oneshot():
                cpu = proc.cpu_percent(None)
                mem = proc.memory_info()
                row = {
                    "pid": pid,
                    "name": proc.name(),
                    "cpu_percent": round(cpu, 1),
                    "memory_rss": mem.rss,
                    "memory_percent": round(proc.memory_percent(), 2),
                    "status": proc.status(),
                    "threads": proc.num_threads(),
                    "created_at": iso(proc.create_time()),
                }
                try:
                    row["username"] = proc.username()
                except (psutil.AccessDenied, KeyError):
                    row["username"] = None
                try:
                    row["cmdline"] = " ".join(proc.cmdline())[:300]
                except (psutil.AccessDenied, psutil.ZombieProcess):
                    row["cmdline"] = None
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied:
            denied += 1
            continue
        rows.append(row)
    key = (lambda r: (r["cpu_percent"], r["memory_rss"])) if sort == "cpu" else (lambda r: r["memory_rss"])
    rows.sort(key=key, reverse=True)
    top = rows[:limit]
    vm = psutil.virtual_memory()
    data = {
        "sort": sort,
        "sample_s": CPU_SAMPLE_S,
        "cpu_count": psutil.cpu_count(),
        "process_count": len(rows),
        "inaccessible": denied,
        "memory_total": vm.total,
        "processes": top,
    }
    text = (
        f"Top {len(top)} of {len(rows)} processes by {'CPU (sampled over %.1fs; 100%% = one core)' % CPU_SAMPLE_S if sort == 'cpu' else 'resident memory'}:\n\n"
        + table(
            ["pid", "user", "cpu%", "mem", "mem%", "status", "command"],
            [
                [
                    r["pid"],
                    r["username"],
                    f"{r['cpu_percent']:.1f}",
                    human_bytes(r["memory_rss"]),
                    f"{r['memory_percent']:.1f}",
                    r["status"],
                    r["cmdline"] or r["name"],
                ]
                for r in top
            ],
            max_width=80,
        )
    )
    if denied:
        text += f"\n\n{denied} process(es) could not be inspected (access denied)."
    return Outcome(data=data, text=text)


def listening_ports(ctx: Context) -> Outcome:
    partial = False
    try:
        conns = psutil.net_connections(kind="inet")
    except psutil.AccessDenied:
        # macOS and others without privileges: collect per process, skipping those we may not see.
        conns = []
        partial = True
        for proc in psutil.process_iter():
            try:
                per_process = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6
                for c in per_process(kind="inet"):
                    conns.append(_Conn(c.family, c.type, c.laddr, c.raddr, c.status, proc.pid))
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
    names: dict[int, tuple[str | None, str | None]] = {}
    entries = []
    seen = set()
    for c in conns:
        if c.type == socket.SOCK_STREAM:
            if c.status != psutil.CONN_LISTEN:
                continue
            proto = "tcp"
        elif c.type == socket.SOCK_DGRAM:
            if c.raddr:
                continue
            proto = "udp"
        else:
            continue
        if not c.laddr:
            continue
        family = "ipv6" if c.family == socket.AF_INET6 else "ipv4"
        key = (proto, family, c.laddr.ip, c.laddr.port, c.pid)
        if key in seen:
            continue
        seen.add(key)
        name, user = (None, None)
        if c.pid:
            if c.pid not in names:
                names[c.pid] = _process_name(c.pid)
            name, user = names[c.pid]
        else:
            partial = partial or os.name != "nt" and os.geteuid() != 0
        entries.append(
            {
                "proto": proto,
                "family": family,
                "address": c.laddr.ip,
                "port": c.laddr.port,
                "pid": c.pid,
                "process": name,
                "username": user,
            }
        )
    entries.sort(key=lambda e: (e["proto"], e["port"], e["family"], e["address"]))
    data = {"ports": entries, "count": len(entries), "partial": partial}
    text = f"{len(entries)} listening socket(s):\n\n" + table(
        ["proto", "address", "port", "pid", "process", "user"],
        [[e["proto"], e["address"], e["port"], e["pid"], e["process"], e["username"]] for e in entries],
    )
    if partial:
        text += (
            "\n\nSome sockets' processes could not be identified (access denied); "
            "run the agent as root/Administrator for a complete list."
        )
    return Outcome(data=data, text=text)


def _process_name(pid: int) -> tuple[str | None, str | None]:
    try:
        proc = psutil.Process(pid)
        name = proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None, None
    try:
        user = proc.username()
    except (psutil.AccessDenied, KeyError):
        user = None
    return name, user


def tasklist_fallback(ctx: Context, limit: int, why: str) -> Outcome:
    """Windows without a usable process list API (Wine): tasklist's names, pids and memory, no CPU."""
    from caisey_agent.diagnostics import windows

    rows = windows.tasklist(ctx)
    if not rows:
        raise RuntimeError(f"the process list cannot be read ({why}) and tasklist listed no process")
    return tasklist_outcome(rows, limit, why)


def tasklist_outcome(rows: list[dict], limit: int, why: str) -> Outcome:
    rows = sorted(rows, key=lambda r: r["memory_rss"] or 0, reverse=True)
    top = rows[:limit]
    data = {
        "sort": "memory",
        "source": "tasklist",
        "cpu_unavailable": why,
        "process_count": len(rows),
        "processes": top,
    }
    text = (
        f"Top {len(top)} of {len(rows)} processes by memory (from tasklist; CPU use is unavailable: {why}):\n\n"
        + table(
            ["pid", "mem", "session", "name"],
            [[r["pid"], human_bytes(r["memory_rss"] or 0), r["session"], r["name"]] for r in top],
        )
    )
    return Outcome(data=data, text=text)
