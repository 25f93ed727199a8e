"""log_errors (journal, syslog files, Windows event log) and file_tail."""

from __future__ import annotations

import collections
import datetime as dt
import glob
import json
import os
import re
import shutil
import stat
import subprocess
import time

from caisey_agent.diagnostics import IS_WINDOWS, Context, NotAvailable, Outcome
from caisey_agent.diagnostics.render import human_bytes, iso

PRIORITIES = {0: "emerg", 1: "alert", 2: "crit", 3: "err", 4: "warning", 5: "notice", 6: "info", 7: "debug"}
SYSLOG_FILES = ("/var/log/syslog", "/var/log/messages")
SYSLOG_SCAN_BYTES = 16 * 1024 * 1024
MAX_MESSAGE = 2000
MAX_COUNTED = 200_000
# Plain syslog files keep no priority: lines are picked by these words (documented as a heuristic).
ERROR_WORDS = re.compile(
    r"\b(error|errors|err|fail|failed|failure|fatal|critical|crit|panic|emerg|emergency|alert|"
    r"segfault|oom|out of memory|killed process|denied|traceback|exception)\b",
    re.IGNORECASE,
)


def log_errors(ctx: Context) -> Outcome:
    minutes = int(ctx.params.get("since_minutes", 60))
    limit = int(ctx.params.get("limit", 50))
    until = time.time()
    since = until - minutes * 60
    if IS_WINDOWS:
        from caisey_agent.diagnostics import windows

        source, count, entries = windows.event_log_errors(ctx, minutes, limit)
    elif _journal_usable():
        source, count, entries = _journal(ctx, since, limit)
    else:
        path = next((f for f in SYSLOG_FILES if os.path.isfile(f)), None)
        if path is None:
            raise NotAvailable(
                "no system journal with entries (journald files under /var/log/journal or /run/log/journal) "
                f"and no {' or '.join(SYSLOG_FILES)}"
            )
        source, count, entries = _syslog(ctx, path, since, limit)
    data = {
        "source": source,
        "window": {"since": iso(since), "until": iso(until), "minutes": minutes},
        "count": count,
        "returned": len(entries),
        "limit": limit,
        "entries": entries,
    }
    header = f"{count} error entr{'y' if count == 1 else 'ies'} in the last {minutes} min from {source}" + (
        f" (showing the latest {len(entries)})" if count > len(entries) else ""
    )
    lines = [header]
    if entries:
        lines.append("")
        for e in entries:
            who = e.get("unit") or e.get("identifier") or "-"
            pid = f"[{e['pid']}]" if e.get("pid") else ""
            lines.append(f"{e['time']} {e.get('priority', '')} {who}{pid}: {e['message']}")
    return Outcome(data=data, text="\n".join(lines))


# --- systemd journal --------------------------------------------------------------------


def _journal_usable() -> bool:
    if shutil.which("journalctl") is None:
        return False
    for root in ("/var/log/journal", "/run/log/journal"):
        if glob.glob(os.path.join(root, "*.journal")) or glob.glob(os.path.join(root, "*", "*.journal")):
            return True
    return False


def _journal(ctx: Context, since: float, limit: int) -> tuple[str, int, list[dict]]:
    """Stream every matching entry (to count them) and keep the latest ``limit``."""
    argv = [
        shutil.which("journalctl") or "journalctl",
        "--no-pager",
        "-q",
        "-p",
        "err",
        "-o",
        "json",
        "--since",
        f"@{int(since)}",
    ]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **ctx.popen_kwargs()
    )
    ctx.track(proc)
    latest: collections.deque = collections.deque(maxlen=limit)
    count = 0
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            ctx.check()
            count += 1
            latest.append(raw)
            if count >= MAX_COUNTED:
                break
            if time.monotonic() > ctx.deadline:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        proc.wait()
        ctx.untrack(proc)
    ctx.check()
    if count == 0 and proc.returncode not in (0, None, -9) and stderr.strip():
        raise RuntimeError(f"journalctl failed (exit code {proc.returncode}): {stderr.strip()[:500]}")
    entries = [e for e in (_journal_entry(line) for line in latest) if e]
    entries.reverse()  # newest first
    return "systemd journal", count, entries


def _journal_entry(raw: bytes) -> dict | None:
    try:
        rec = json.loads(raw)
    except ValueError:
        return None
    message = rec.get("MESSAGE", "")
    if isinstance(message, list):  # binary message: an array of byte values
        message = bytes(b for b in message if isinstance(b, int) and 0 <= b < 256).decode(errors="replace")
    try:
        ts = int(rec.get("__REALTIME_TIMESTAMP", "0")) / 1e6
    except (TypeError, ValueError):
        ts = 0
    try:
        priority = PRIORITIES.get(int(rec.get("PRIORITY", 3)), "err")
    except (TypeError, ValueError):
        priority = "err"
    return {
        "time": iso(ts),
        "priority": priority,
        "unit": rec.get("_SYSTEMD_UNIT") or rec.get("UNIT") or "",
        "identifier": rec.get("SYSLOG_IDENTIFIER") or rec.get("_COMM") or "",
        "pid": _int(rec.get("_PID") or rec.get("SYSLOG_PID")),
        "message": str(message)[:MAX_MESSAGE],
    }


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# --- plain syslog files -------------------------------------------------------------------

RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?)\s+(\S+)\s+(.*)$")
BSD = re.compile(r"^([A-Z][a-z]{2})\s+(\d{1,2})\s+(\d{2}):(\d{2}):(\d{2})\s+(\S+)\s+(.*)$")
TAG = re.compile(r"^([^\s:\[]+)(?:\[(\d+)\])?:\s?(.*)$")
MONTHS = {
    m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)
}


def parse_syslog_line(line: str, now: float | None = None) -> tuple[float, str, str] | None:
    """(timestamp, host, rest) of one syslog line, in either the RFC 3339 or the classic BSD format."""
    m = RFC3339.match(line)
    if m:
        stamp = m.group(1).replace("Z", "+00:00")
        try:
            when = dt.datetime.fromisoformat(stamp)
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.astimezone()
        return when.timestamp(), m.group(2), m.group(3)
    m = BSD.match(line)
    if m and m.group(1) in MONTHS:
        now_dt = dt.datetime.fromtimestamp(now or time.time())
        try:
            when = dt.datetime(
                now_dt.year, MONTHS[m.group(1)], int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5))
            )
        except ValueError:
            return None
        if when - now_dt > dt.timedelta(days=1):  # a December line read in January
            when = when.replace(year=when.year - 1)
        return when.timestamp(), m.group(6), m.group(7)
    return None


def _syslog(ctx: Context, path: str, since: float, limit: int) -> tuple[str, int, list[dict]]:
    latest: collections.deque = collections.deque(maxlen=limit)
    count = 0
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            start = max(0, size - SYSLOG_SCAN_BYTES)
            fh.seek(start)
            if start:
                fh.readline()  # a partial line
            for n, raw in enumerate(fh):
                if n % 5000 == 0:
                    ctx.check()
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                parsed = parse_syslog_line(line)
                if parsed is None or parsed[0] < since:
                    continue
                ts, host, rest = parsed
                if not ERROR_WORDS.search(rest):
                    continue
                count += 1
                tag = TAG.match(rest)
                latest.append(
                    {
                        "time": iso(ts),
                        "priority": "",
                        "identifier": tag.group(1) if tag else "",
                        "pid": _int(tag.group(2)) if tag else None,
                        "message": (tag.group(3) if tag else rest)[:MAX_MESSAGE],
                        "host": host,
                    }
                )
    except PermissionError as exc:
        raise NotAvailable(f"cannot read {path}: {exc.strerror} (the agent runs as uid {os.geteuid()})") from None
    entries = list(latest)
    entries.reverse()
    return f"{path} (lines matching error keywords)", count, entries


# --- file_tail ------------------------------------------------------------------------------

TAIL_MAX_BYTES = 64 * 1024
BLOCK = 8192


def file_tail(ctx: Context) -> Outcome:
    requested = ctx.params["path"]
    lines_wanted = int(ctx.params.get("lines", 100))
    allowed, resolved = ctx.policy.tail_path_allowed(requested)
    if not allowed:
        patterns = ", ".join(ctx.policy.allowed_tail_paths) or "none"
        why = f" (lockdown: {ctx.policy.problem})" if ctx.policy.lockdown else ""
        return Outcome(
            data={
                "path": requested,
                "resolved_path": resolved,
                "allowed_patterns": list(ctx.policy.allowed_tail_paths),
            },
            text=f"Refused: {resolved} is not on this endpoint's list of files that may be read ({patterns}){why}.",
            ok=False,
            error=f"path not allowed by the endpoint's local policy: {resolved} matches none of: {patterns}{why}",
        )
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(resolved, flags)
    except FileNotFoundError:
        return Outcome(
            data={"path": requested, "resolved_path": resolved},
            text=f"{resolved} does not exist.",
            ok=False,
            error=f"file not found: {resolved}",
        )
    except OSError as exc:
        return Outcome(
            data={"path": requested, "resolved_path": resolved},
            text=f"Cannot open {resolved}: {exc.strerror}",
            ok=False,
            error=f"cannot open {resolved}: {exc.strerror or exc}",
        )
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return Outcome(
                data={"path": requested, "resolved_path": resolved},
                text=f"{resolved} is not a regular file.",
                ok=False,
                error=f"not a regular file: {resolved}",
            )
        raw, clipped = tail_bytes(fd, st.st_size, lines_wanted, TAIL_MAX_BYTES)
    finally:
        os.close(fd)
    text_lines = raw.decode("utf-8", errors="replace").splitlines()
    data = {
        "path": requested,
        "resolved_path": resolved,
        "size": st.st_size,
        "modified": iso(st.st_mtime),
        "lines_requested": lines_wanted,
        "lines_returned": len(text_lines),
        "clipped_to_bytes": TAIL_MAX_BYTES if clipped else None,
        "lines": text_lines,
    }
    header = (
        f"==> {resolved} ({human_bytes(st.st_size)}, modified {iso(st.st_mtime)}): last {len(text_lines)} line(s)"
        + (f", clipped to the last {TAIL_MAX_BYTES // 1024} KiB" if clipped else "")
        + " <=="
    )
    return Outcome(data=data, text=header + "\n" + "\n".join(text_lines))


def tail_bytes(fd: int, size: int, lines: int, max_bytes: int) -> tuple[bytes, bool]:
    """The bytes of the last ``lines`` lines, reading backwards block by block; at most ``max_bytes``."""
    end = size
    pos = size
    chunks: list[bytes] = []
    newlines = 0
    # A trailing newline ends the last line; it does not start another one.
    if size:
        last = os.pread(fd, 1, size - 1) if hasattr(os, "pread") else _read_at(fd, size - 1, 1)
        if last == b"\n":
            newlines = -1
    while pos > 0 and newlines < lines and end - pos < max_bytes:
        step = min(BLOCK, pos, max_bytes - (end - pos))
        pos -= step
        block = os.pread(fd, step, pos) if hasattr(os, "pread") else _read_at(fd, pos, step)
        chunks.append(block)
        newlines += block.count(b"\n")
    data = b"".join(reversed(chunks))
    clipped = False
    if newlines >= lines:
        # Drop everything before the start of the wanted lines.
        cut = len(data)
        seen = 0
        body_end = len(data) - 1 if data.endswith(b"\n") else len(data)
        cut = body_end
        while seen < lines:
            cut = data.rfind(b"\n", 0, cut)
            if cut < 0:
                break
            seen += 1
        data = data[cut + 1 :] if cut >= 0 else data
    elif pos > 0:
        clipped = True
        first = data.find(b"\n")
        data = data[first + 1 :] if first >= 0 else data
    return data, clipped


def _read_at(fd: int, offset: int, length: int) -> bytes:
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, length)
