"""service_status and service_restart: systemd on Linux, the Service Control Manager on Windows."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys

from caisey_agent.diagnostics import IS_LINUX, IS_WINDOWS, Context, NotAvailable, Outcome
from caisey_agent.diagnostics.render import kv, table

# systemd unit names (and Windows service names): letters, digits and :-_.\@ ; never an option.
SERVICE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9:_.@\\\- ]{0,199}$")

SHOW_PROPERTIES = (
    "Id",
    "Description",
    "LoadState",
    "ActiveState",
    "SubState",
    "UnitFileState",
    "MainPID",
    "ExecMainStatus",
    "ExecMainStartTimestamp",
    "ActiveEnterTimestamp",
    "StateChangeTimestamp",
    "NRestarts",
    "Result",
    "FragmentPath",
    "MemoryCurrent",
)


def check_name(name: str) -> str:
    name = name.strip()
    if not SERVICE_NAME.match(name) or (not IS_WINDOWS and " " in name):
        raise ValueError(f"{name!r} is not a valid service name")
    return name


def require_systemd(ctx: Context) -> None:
    if not IS_LINUX:
        raise NotAvailable(f"service management is implemented for systemd (Linux) and Windows, not {sys.platform}")
    if shutil.which("systemctl") is None:
        raise NotAvailable("systemd's systemctl is not installed")
    if not os.path.isdir("/run/systemd/system"):
        raise NotAvailable(f"systemd is not running on this endpoint (PID 1 is {_pid1()}), e.g. a container")


def _pid1() -> str:
    try:
        with open("/proc/1/comm", encoding="utf-8") as fh:
            return fh.read().strip() or "unknown"
    except OSError:
        return "unknown"


def systemd_show(ctx: Context, unit: str) -> dict[str, str]:
    done = ctx.run(
        ["systemctl", "show", "--no-pager", "--property=" + ",".join(SHOW_PROPERTIES), "--", unit],
        timeout=30,
        what="systemctl",
    )
    if done.returncode != 0:
        raise RuntimeError(f"systemctl show failed (exit code {done.returncode}): {done.stderr.strip()[:500]}")
    props: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key] = value
    return props


def _unit_data(props: dict[str, str]) -> dict:
    def num(key: str) -> int | None:
        value = props.get(key, "")
        return int(value) if value.isdigit() else None

    return {
        "unit": props.get("Id", ""),
        "description": props.get("Description", ""),
        "load_state": props.get("LoadState", ""),
        "active_state": props.get("ActiveState", ""),
        "sub_state": props.get("SubState", ""),
        "unit_file_state": props.get("UnitFileState", ""),
        "main_pid": num("MainPID") or None,
        "last_exit_status": num("ExecMainStatus"),
        "result": props.get("Result", ""),
        "restarts": num("NRestarts"),
        "started_at": props.get("ExecMainStartTimestamp") or None,
        "active_since": props.get("ActiveEnterTimestamp") or None,
        "state_changed_at": props.get("StateChangeTimestamp") or None,
        "memory_bytes": num("MemoryCurrent"),
        "unit_file": props.get("FragmentPath") or None,
    }


def _render_unit(u: dict) -> str:
    return kv(
        [
            ("Service", f"{u['unit']} — {u['description']}"),
            (
                "State",
                f"{u['active_state']} ({u['sub_state']}), load {u['load_state']}, enabled: {u['unit_file_state'] or '-'}",
            ),
            ("Main PID", u["main_pid"]),
            ("Since", u["active_since"] or u["state_changed_at"]),
            ("Last result", f"{u['result']} (exit status {u['last_exit_status']})"),
            ("Restarts", u["restarts"]),
            ("Unit file", u["unit_file"]),
        ]
    )


def service_status(ctx: Context) -> Outcome:
    name = ctx.params.get("service", "")
    if IS_WINDOWS:
        from caisey_agent.diagnostics import windows

        return windows.service_status(ctx, check_name(name) if name else "")
    require_systemd(ctx)
    if name:
        unit = systemd_show(ctx, check_name(name))
        data = _unit_data(unit)
        if data["load_state"] == "not-found":
            return Outcome(
                data={"service": data},
                text=f"Service {name} was not found.",
                ok=False,
                error=f"service {name!r} not found",
            )
        return Outcome(data={"service": data}, text=_render_unit(data))
    failed = list_failed_units(ctx)
    data = {"failed_units": failed, "count": len(failed)}
    if not failed:
        return Outcome(data=data, text="No failed services.")
    text = f"{len(failed)} failed unit(s):\n\n" + table(
        ["unit", "load", "active", "sub", "description"],
        [[u["unit"], u["load"], u["active"], u["sub"], u["description"]] for u in failed],
    )
    return Outcome(data=data, text=text)


def list_failed_units(ctx: Context) -> list[dict]:
    done = ctx.run(["systemctl", "list-units", "--failed", "--all", "--no-pager", "--output=json"], timeout=30)
    if done.returncode == 0 and done.stdout.lstrip().startswith("["):
        try:
            return [
                {
                    "unit": u.get("unit", ""),
                    "load": u.get("load", ""),
                    "active": u.get("active", ""),
                    "sub": u.get("sub", ""),
                    "description": u.get("description", ""),
                }
                for u in json.loads(done.stdout)
            ]
        except ValueError:
            pass
    # systemd older than 246 has no JSON output: parse the plain listing.
    done = ctx.run(["systemctl", "list-units", "--failed", "--all", "--no-pager", "--no-legend", "--plain"], timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"systemctl list-units failed (exit code {done.returncode}): {done.stderr.strip()[:500]}")
    units = []
    for line in done.stdout.splitlines():
        parts = line.lstrip("● ").split(None, 4)
        if len(parts) >= 4:
            units.append(
                {
                    "unit": parts[0],
                    "load": parts[1],
                    "active": parts[2],
                    "sub": parts[3],
                    "description": parts[4] if len(parts) > 4 else "",
                }
            )
    return units


def service_restart(ctx: Context) -> Outcome:
    name = check_name(ctx.params["service"])
    if IS_WINDOWS:
        from caisey_agent.diagnostics import windows

        return windows.service_restart(ctx, name)
    require_systemd(ctx)
    before = _unit_data(systemd_show(ctx, name))
    if before["load_state"] == "not-found":
        return Outcome(
            data={"service": before},
            text=f"Service {name} was not found; nothing restarted.",
            ok=False,
            error=f"service {name!r} not found",
        )
    done = ctx.run(["systemctl", "restart", "--no-ask-password", "--", name], timeout=max(5.0, ctx.remaining() - 5))
    after = _unit_data(systemd_show(ctx, name))
    data = {
        "service": after,
        "before": {
            "active_state": before["active_state"],
            "sub_state": before["sub_state"],
            "main_pid": before["main_pid"],
        },
        "restart": {"exit_code": done.returncode, "stderr": done.stderr.strip()[:2000]},
    }
    text = (
        f"systemctl restart {name}: exit code {done.returncode}"
        + (f"\n{done.stderr.strip()}" if done.stderr.strip() else "")
        + f"\n\nBefore: {before['active_state']} ({before['sub_state']}), PID {before['main_pid']}\n\n"
        + _render_unit(after)
    )
    if done.returncode != 0:
        return Outcome(
            data=data,
            text=text,
            ok=False,
            exit_code=done.returncode,
            error=f"systemctl restart failed (exit code {done.returncode}): {done.stderr.strip()[:500]}",
        )
    if after["active_state"] != "active":
        return Outcome(
            data=data,
            text=text,
            ok=False,
            exit_code=done.returncode,
            error=f"{name} is {after['active_state']} ({after['sub_state']}) after the restart",
        )
    return Outcome(data=data, text=text, exit_code=0)
