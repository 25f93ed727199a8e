"""The Windows-only catalogue entries: event logs, Windows Update, Defender, BitLocker, the registry and
domain controller health. Each refuses plainly (NotAvailable) off Windows; the platform calls are in
:mod:`windows`, the parsing in :mod:`winparse`."""

from __future__ import annotations

import time

from caisey_agent import platforms
from caisey_agent.diagnostics import Context, NotAvailable, Outcome
from caisey_agent.diagnostics import winparse as wp
from caisey_agent.diagnostics.render import fmt, kv, table


def _require_windows(what: str) -> None:
    if not platforms.is_windows():
        raise NotAvailable(f"{what} exists on Windows endpoints only")


def _int_list(text: str, name: str) -> list[int]:
    out = []
    for part in (text or "").replace(" ", "").split(","):
        if not part:
            continue
        if not part.isdigit():
            raise ValueError(f"{name}: {part!r} is not a number")
        out.append(int(part))
    return out


def event_log_query(params: dict) -> tuple[str, str, int]:
    """(channel, XPath query, limit) from the action's parameters; ValueError on a bad one."""
    channel = params.get("channel") or "System"
    if not wp.CHANNEL.match(channel):
        raise ValueError(f"{channel!r} is not a valid event log channel name")
    levels = []
    for word in (params.get("levels") or "").replace(" ", "").lower().split(","):
        if not word:
            continue
        if word not in wp.LEVEL_NUMBERS:
            raise ValueError(f"levels: {word!r} is not one of {', '.join(wp.LEVEL_NUMBERS)}")
        levels.append(wp.LEVEL_NUMBERS[word])
    providers = [p.strip() for p in (params.get("provider") or "").split(",") if p.strip()]
    since = int(params.get("since_minutes") or 60)
    until = int(params.get("until_minutes_ago") or 0)
    if until and until >= since:
        raise ValueError("until_minutes_ago must be smaller than since_minutes")
    query = wp.event_query(
        levels=levels,
        providers=providers,
        event_ids=_int_list(params.get("event_ids", ""), "event_ids"),
        since_ms=since * 60_000,
        until_ms_ago=until * 60_000 if until else None,
    )
    return channel, query, int(params.get("limit") or 50)


def event_log(ctx: Context) -> Outcome:
    _require_windows("the Windows event log")
    from caisey_agent.diagnostics import windows

    channel, query, limit = event_log_query(ctx.params)
    events = windows.wevtutil_query(ctx, channel, query, limit)
    return event_log_outcome(channel, query, limit, events)


def event_log_outcome(channel: str, query: str, limit: int, events: list[dict]) -> Outcome:
    data = {"channel": channel, "query": query, "limit": limit, "returned": len(events), "events": events}
    if not events:
        return Outcome(data=data, text=f"No event in {channel} matches {query}.")
    return Outcome(
        data=data,
        text=f"{len(events)} event(s) from {channel} (newest first):\n\n"
        + "\n".join(f"{e['time']} {e['level_name']} {e['provider']} [{e['event_id']}]: {e['message']}" for e in events),
    )


def windows_update(ctx: Context) -> Outcome:
    _require_windows("Windows Update")
    from caisey_agent.diagnostics import windows

    return windows_update_outcome(windows.windows_update(ctx))


def windows_update_outcome(data: dict) -> Outcome:
    text = kv(
        [
            ("Last installed", f"{fmt(data['last_installed'])} ({fmt(data['last_installed_days_ago'])} days ago)"),
            ("Last successful install", fmt(data["last_install_success"])),
            ("Last successful search", fmt(data["last_search_success"])),
            ("Pending", f"{data['pending_count']} ({data['pending_security']} critical/important)"),
        ]
    )
    if data["pending"]:
        text += "\n\n" + table(
            ["kb", "severity", "reboot", "update"],
            [
                [", ".join(u["kb"]) or "-", u["severity"] or "-", "yes" if u["reboot_required"] else "no", u["title"]]
                for u in data["pending"]
            ],
            max_width=100,
        )
    if data["search_error"]:
        text += f"\n\nThe search for pending updates failed: {data['search_error']}"
        return Outcome(data=data, text=text, ok=False, error=f"Windows Update search failed: {data['search_error']}")
    return Outcome(data=data, text=text)


def defender_status(ctx: Context) -> Outcome:
    _require_windows("Microsoft Defender")
    from caisey_agent.diagnostics import windows

    return defender_outcome(windows.defender(ctx))


def defender_outcome(data: dict) -> Outcome:
    problems = wp.defender_problems(data)
    data = {**data, "problems": problems}
    text = kv(
        [
            ("Antivirus", "enabled" if data["antivirus_enabled"] else "DISABLED"),
            ("Real-time protection", "on" if data["real_time_protection"] else "OFF"),
            ("Mode", data["running_mode"]),
            ("Signatures", f"{data['signature_version']} ({fmt(data['signature_age_days'])} days old)"),
            ("Last scan", f"{fmt(data['last_scan'])} ({fmt(data['last_scan_days_ago'])} days ago)"),
            ("Tamper protection", fmt(data["tamper_protected"])),
        ]
    )
    if problems:
        return Outcome(data=data, text=text, ok=False, error="Defender: " + "; ".join(problems))
    return Outcome(data=data, text=text)


def bitlocker_status(ctx: Context) -> Outcome:
    _require_windows("BitLocker")
    from caisey_agent.diagnostics import windows

    return bitlocker_outcome(windows.bitlocker(ctx))


def bitlocker_outcome(volumes: list[dict]) -> Outcome:
    data = {"volumes": volumes, "unprotected": [v["mount_point"] for v in volumes if v["protection"] != "On"]}
    text = table(
        ["volume", "type", "protection", "status", "encrypted", "protectors"],
        [
            [
                v["mount_point"],
                v["volume_type"],
                v["protection"],
                v["status"],
                f"{v['encryption_percentage']}%",
                ", ".join(str(k) for k in v["key_protectors"]) or "-",
            ]
            for v in volumes
        ],
    )
    return Outcome(data=data, text=text or "No BitLocker-capable volume.")


def registry_read(ctx: Context) -> Outcome:
    allow = tuple(getattr(ctx.policy, "allowed_registry_paths", ()) or wp.DEFAULT_REGISTRY_ALLOW)
    hive, subkey = wp.registry_path(ctx.params["path"], allow)  # checked before the platform is: a clear refusal
    _require_windows("the registry")
    from caisey_agent.diagnostics import windows

    value = ctx.params.get("value") or None
    found = windows.registry_read(hive, subkey, value)
    return registry_outcome(f"{hive}\\{subkey}", value, found)


def registry_outcome(path: str, value: str | None, found: dict) -> Outcome:
    data = {"path": path, **found}
    if not found["exists"]:
        return Outcome(data=data, text=f"{path} does not exist.", ok=False, error=f"registry key {path} does not exist")
    if value is not None:
        if not found.get("value_exists"):
            return Outcome(
                data=data, text=f"{path} has no value {value!r}.", ok=False, error=f"no value {value!r} in {path}"
            )
        v = found["value"]
        return Outcome(data=data, text=f"{path}\\{v['name']} ({v['type']}) = {v['data']!r}")
    text = f"{path}: {found['values_total']} value(s), {found['subkeys_total']} subkey(s)\n\n" + table(
        ["name", "type", "data"], [[v["name"] or "(Default)", v["type"], repr(v["data"])] for v in found["values"]]
    )
    if found["subkeys"]:
        text += "\n\nSubkeys: " + ", ".join(found["subkeys"])
    return Outcome(data=data, text=text)


def dc_health(ctx: Context) -> Outcome:
    _require_windows("domain controller health (dcdiag, repadmin)")
    done = ctx.run(["dcdiag"], timeout=ctx.remaining(240), what="dcdiag (the AD DS tools)")
    if not done.stdout.strip():
        raise RuntimeError(f"dcdiag printed nothing (exit code {done.returncode}): {done.stderr.strip()[:300]}")
    repl = ctx.run(["repadmin", "/replsummary"], timeout=ctx.remaining(120), what="repadmin (the AD DS tools)")
    if not repl.stdout.strip():
        raise RuntimeError(f"repadmin printed nothing (exit code {repl.returncode}): {repl.stderr.strip()[:300]}")
    return dc_health_outcome(wp.parse_dcdiag(done.stdout), wp.parse_replsummary(repl.stdout))


def dc_health_outcome(diag: dict, repl: dict) -> Outcome:
    data = {"dcdiag": diag, "replication": repl, "checked_at": time.time()}
    if not diag["tests"]:
        return Outcome(
            data=data, text="dcdiag ran no test that could be read.", ok=False, error="dcdiag: no test result"
        )
    problems = [f"dcdiag failed {f}" for f in diag["failed"]] + [f"replication failing on {d}" for d in repl["failing"]]
    text = kv(
        [
            ("dcdiag", f"{diag['passed']} passed, {len(diag['failed'])} failed"),
            ("Failed tests", ", ".join(diag["failed"]) or "none"),
            ("Replication", "failing: " + ", ".join(repl["failing"]) if repl["failing"] else "no failures"),
        ]
    )
    return Outcome(data=data, text=text, ok=not problems, error="; ".join(problems))


# --- IIS -----------------------------------------------------------------------------------------


def iis_status(ctx: Context) -> Outcome:
    _require_windows("IIS")
    import os

    appcmd = os.path.join(os.environ.get("SystemRoot", r"C:\Windows"), "System32", "inetsrv", "appcmd.exe")
    if not os.path.exists(appcmd):
        raise NotAvailable("IIS is not installed (no inetsrv\\appcmd.exe)")
    sites = ctx.run([appcmd, "list", "site", "/xml"], timeout=60, what="appcmd")
    pools = ctx.run([appcmd, "list", "apppool", "/xml"], timeout=60, what="appcmd")
    for done in (sites, pools):
        if done.returncode != 0 or not done.stdout.strip():
            raise RuntimeError(
                f"appcmd failed (exit code {done.returncode}): {(done.stderr or done.stdout).strip()[:300]}"
            )
    return iis_outcome(wp.parse_appcmd_sites(sites.stdout), wp.parse_appcmd_pools(pools.stdout))


def iis_outcome(sites: list[dict], pools: list[dict]) -> Outcome:
    stopped = [s["name"] for s in sites if s["state"] != "Started"] + [
        f"app pool {p['name']}" for p in pools if p["state"] != "Started"
    ]
    data = {"sites": sites, "app_pools": pools, "not_started": stopped}
    text = table(
        ["site", "id", "state", "bindings"],
        [
            [s["name"], s["id"], s["state"], ", ".join(f"{b['protocol']} {b['binding']}" for b in s["bindings"])]
            for s in sites
        ],
    )
    text += "\n\n" + table(
        ["app pool", "state", "pipeline", "runtime"],
        [[p["name"], p["state"], p["pipeline_mode"], p["runtime_version"] or "none"] for p in pools],
    )
    if stopped:
        return Outcome(data=data, text=text, ok=False, error="not started: " + ", ".join(stopped))
    return Outcome(data=data, text=text)


# --- SQL Server ------------------------------------------------------------------------------------


def sql_prelogin(host: str, port: int, timeout: float) -> dict:
    """Connect and exchange the TDS pre-login messages: proves a SQL Server answers on host:port."""
    import socket

    start = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        connected = round((time.perf_counter() - start) * 1000, 2)
        sock.settimeout(timeout)
        sock.sendall(wp.tds_prelogin_packet())
        head = _recv_exactly(sock, 8)
        length = int.from_bytes(head[2:4], "big")
        if length < 8 or length > 4096:
            raise ValueError("not a TDS response (is this port a SQL Server?)")
        packet = head + _recv_exactly(sock, length - 8)
    answer = wp.parse_tds_prelogin(packet)
    return {**answer, "product": wp.SQL_MAJOR.get(answer["major"]), "connect_ms": connected}


def _recv_exactly(sock, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ValueError("the server closed the connection during the TDS pre-login")
        data += chunk
    return data


def sql_server_check(ctx: Context) -> Outcome:
    """The SQL Server service's state (on this machine) and whether a SQL Server answers on host:port."""
    host = ctx.params.get("host") or "127.0.0.1"
    port = int(ctx.params.get("port") or 1433)
    instance = ctx.params.get("instance") or "MSSQLSERVER"
    data: dict = {"host": host, "port": port, "instance": instance}
    if platforms.is_windows() and host in ("127.0.0.1", "localhost", "::1"):
        from caisey_agent.diagnostics import windows

        name = "MSSQLSERVER" if instance.upper() == "MSSQLSERVER" else f"MSSQL${instance}"
        try:
            rows = [wp.service_row(r) for r in windows._scm_services(name)]
            data["service"] = rows[0] if rows else None
        except NotAvailable as exc:
            data["service_error"] = str(exc)
    try:
        data["tds"] = sql_prelogin(host, port, ctx.remaining(10))
    except (OSError, ValueError) as exc:
        data["tds_error"] = str(exc) or type(exc).__name__
    return sql_outcome(data)


def sql_outcome(data: dict) -> Outcome:
    problems = []
    svc = data.get("service")
    if "service" in data and svc is None:
        problems.append(f"no SQL Server service for instance {data['instance']}")
    elif svc and svc["status"] != "Running":
        problems.append(f"{svc['name']} is {svc['status']}")
    if "tds_error" in data:
        problems.append(f"no SQL Server answer on {data['host']}:{data['port']}: {data['tds_error']}")
    tds = data.get("tds") or {}
    text = kv(
        [
            ("Instance", data["instance"]),
            (
                "Service",
                f"{svc['status']} ({svc['start_type']})" if svc else data.get("service_error", "not checked (remote)"),
            ),
            ("Endpoint", f"{data['host']}:{data['port']}"),
            (
                "Answer",
                f"{tds.get('product') or 'SQL Server'} {tds['version']}, encryption {tds['encryption']}, "
                f"connected in {tds['connect_ms']} ms"
                if tds
                else data.get("tds_error"),
            ),
        ]
    )
    return Outcome(data=data, text=text, ok=not problems, error="; ".join(problems))
