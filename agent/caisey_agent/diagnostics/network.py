"""network_config, dns_resolve, tcp_connect and http_check.

The connectivity checks (dns_resolve, tcp_connect, http_check) report a *failed*
action when the check fails (name does not resolve, connection refused, HTTP
status >= 400, TLS verification error), always with the full data gathered, so a
red line in the console means "this did not work from the endpoint".
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import ssl
import struct
import time
import urllib.error
import urllib.parse
import urllib.request

import psutil

from caisey_agent import __version__
from caisey_agent.diagnostics import IS_WINDOWS, Context, NotAvailable, Outcome
from caisey_agent.diagnostics.render import fmt, iso, kv, table


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


# --- network_config ----------------------------------------------------------------------


def network_config(ctx: Context) -> Outcome:
    stats = psutil.net_if_stats()
    interfaces = []
    for name, addrs in sorted(psutil.net_if_addrs().items()):
        st = stats.get(name)
        entry = {
            "name": name,
            "up": st.isup if st else None,
            "speed_mbps": (st.speed or None) if st else None,
            "mtu": st.mtu if st else None,
            "duplex": {2: "full", 1: "half"}.get(int(st.duplex), None) if st else None,
            "flags": getattr(st, "flags", "") if st else "",
            "mac": None,
            "addresses": [],
        }
        for a in addrs:
            if a.family == psutil.AF_LINK:
                entry["mac"] = a.address
            elif a.family in (socket.AF_INET, socket.AF_INET6):
                entry["addresses"].append(
                    {
                        "family": "ipv4" if a.family == socket.AF_INET else "ipv6",
                        "address": a.address,
                        "netmask": a.netmask,
                        "broadcast": a.broadcast,
                    }
                )
        interfaces.append(entry)
    try:
        routes, route_source = default_routes(ctx)
    except (RuntimeError, NotAvailable) as exc:  # Windows without a working Get-NetRoute: say so, keep the rest
        routes, route_source = [], f"unavailable: {exc}"
    dns = dns_config(ctx)
    data = {"interfaces": interfaces, "default_routes": routes, "route_source": route_source, "dns": dns}
    text = [
        table(
            ["interface", "up", "speed", "mtu", "addresses"],
            [
                [
                    i["name"],
                    i["up"],
                    f"{i['speed_mbps']} Mb/s" if i["speed_mbps"] else "-",
                    i["mtu"],
                    ", ".join(
                        a["address"] + (f"/{_prefix(a['netmask'])}" if a["netmask"] else "") for a in i["addresses"]
                    )
                    or "-",
                ]
                for i in interfaces
            ],
            max_width=90,
        )
    ]
    text.append(
        (
            "Default route(s) unknown: " + route_source[len("unavailable: ") :] + "\n"
            if not routes and route_source.startswith("unavailable")
            else ""
        )
        + "Default route(s): "
        + (
            ", ".join(
                f"via {r['gateway']} dev {r['interface']}"
                + (f" metric {r['metric']}" if r.get("metric") is not None else "")
                for r in routes
            )
            or "none"
        )
    )
    text.append(
        "DNS servers: "
        + (", ".join(dns["servers"]) or "none")
        + (
            f" (upstream of the local stub: {', '.join(dns['upstream_servers'])})"
            if dns.get("upstream_servers")
            else ""
        )
        + (f"\nSearch domains: {', '.join(dns['search'])}" if dns.get("search") else "")
    )
    return Outcome(data=data, text="\n\n".join(text))


def _prefix(netmask: str | None) -> str:
    try:
        return str(bin(int(ipaddress.ip_address(netmask))).count("1"))
    except (ValueError, TypeError):
        return str(netmask)


def default_routes(ctx: Context) -> tuple[list[dict], str]:
    if IS_WINDOWS:
        from caisey_agent.diagnostics import windows

        return windows.default_routes(ctx), "Get-NetRoute"
    routes: list[dict] = []
    if os.path.exists("/proc/net/route"):
        routes += _proc_routes_v4()
        routes += _proc_routes_v6()
        return routes, "/proc/net/route, /proc/net/ipv6_route"
    if shutil.which("ip"):
        done = ctx.run(["ip", "route", "show", "default"], timeout=10)
        for line in done.stdout.splitlines():
            m = re.search(r"via (\S+) dev (\S+)(?:.*metric (\d+))?", line)
            if m:
                routes.append(
                    {
                        "family": "ipv4",
                        "gateway": m.group(1),
                        "interface": m.group(2),
                        "metric": int(m.group(3)) if m.group(3) else None,
                    }
                )
        return routes, "ip route"
    if shutil.which("route"):  # macOS / BSD
        done = ctx.run(["route", "-n", "get", "default"], timeout=10)
        gw = re.search(r"gateway:\s*(\S+)", done.stdout)
        dev = re.search(r"interface:\s*(\S+)", done.stdout)
        if gw:
            routes.append(
                {"family": "ipv4", "gateway": gw.group(1), "interface": dev.group(1) if dev else None, "metric": None}
            )
        return routes, "route get default"
    return routes, "unavailable"


def _proc_routes_v4() -> list[dict]:
    routes = []
    try:
        with open("/proc/net/route", encoding="ascii", errors="replace") as fh:
            next(fh, None)
            for line in fh:
                f = line.split()
                if len(f) < 8 or f[1] != "00000000" or f[7] != "00000000":
                    continue
                flags = int(f[3], 16)
                if not flags & 0x1:  # RTF_UP
                    continue
                gateway = socket.inet_ntoa(struct.pack("<L", int(f[2], 16)))
                routes.append({"family": "ipv4", "gateway": gateway, "interface": f[0], "metric": int(f[6])})
    except OSError:
        pass
    return routes


def _proc_routes_v6() -> list[dict]:
    routes = []
    try:
        with open("/proc/net/ipv6_route", encoding="ascii", errors="replace") as fh:
            for line in fh:
                f = line.split()
                if len(f) < 10 or f[0] != "0" * 32 or f[1] != "00" or f[4] == "0" * 32 or f[9] == "lo":
                    continue
                gateway = str(ipaddress.IPv6Address(bytes.fromhex(f[4])))
                routes.append({"family": "ipv6", "gateway": gateway, "interface": f[9], "metric": int(f[5], 16)})
    except (OSError, ValueError):
        pass
    return routes


def _read_resolv_conf(path: str) -> dict:
    conf = {"servers": [], "search": [], "options": []}
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.split("#", 1)[0].split(";", 1)[0].split()
                if len(parts) < 2:
                    continue
                if parts[0] == "nameserver":
                    conf["servers"].append(parts[1])
                elif parts[0] in ("search", "domain"):
                    conf["search"] = parts[1:]
                elif parts[0] == "options":
                    conf["options"] += parts[1:]
    except OSError:
        conf["error"] = f"cannot read {path}"
    return conf


def dns_config(ctx: Context) -> dict:
    if IS_WINDOWS:
        from caisey_agent.diagnostics import windows

        return windows.dns_config(ctx)
    conf = _read_resolv_conf("/etc/resolv.conf")
    conf["source"] = "/etc/resolv.conf"
    if conf["servers"] and all(s.startswith("127.") for s in conf["servers"]):
        for upstream in ("/run/systemd/resolve/resolv.conf", "/var/run/NetworkManager/no-stub-resolv.conf"):
            if os.path.exists(upstream):
                up = _read_resolv_conf(upstream)
                conf["upstream_servers"] = up["servers"]
                conf["upstream_source"] = upstream
                break
    return conf


# --- dns_resolve ------------------------------------------------------------------------------

NAME = re.compile(r"^[A-Za-z0-9_*]([A-Za-z0-9_.\-]*[A-Za-z0-9_])?\.?$")


def _check_name(name: str, record_type: str) -> str:
    name = name.strip()
    if record_type == "PTR":
        try:
            return str(ipaddress.ip_address(name))
        except ValueError:
            pass
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"{name!r} is not a valid DNS name") from None
    if not NAME.match(name) or ".." in name or any(len(label) > 63 for label in name.split(".")):
        raise ValueError(f"{name!r} is not a valid DNS name")
    return name


def parse_server(server: str) -> tuple[str, int]:
    """'1.1.1.1', '1.1.1.1:5353', '[2606:4700::1111]:53', '2606:4700::1111' or a host name."""
    server = server.strip()
    port = 53
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif server.count(":") == 1:
        host, _, p = server.partition(":")
        port = int(p)
    else:
        host = server
    if not host or not 0 < port < 65536:
        raise ValueError(f"{server!r} is not a DNS server address")
    return host, port


def dns_resolve(ctx: Context) -> Outcome:
    record_type = ctx.params.get("record_type", "A")
    name = _check_name(ctx.params["name"], record_type)
    server = ctx.params.get("server") or ""
    if server:
        try:
            host, port = parse_server(server)
        except ValueError as exc:
            raise ValueError(f"server: {exc}") from None
        try:
            ipaddress.ip_address(host)
            server_ip = host
        except ValueError:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            server_ip = infos[0][4][0]
        outcome = _dnspython_query(ctx, name, record_type, [(server_ip, port)], f"{server} ({server_ip}:{port})")
    elif record_type in ("A", "AAAA"):
        outcome = _system_lookup(name, record_type)
    elif record_type == "PTR" and _is_ip(name):
        outcome = _system_reverse(name)
    else:
        servers = _system_nameservers()
        if not servers:
            raise NotAvailable("no DNS server is configured on this endpoint for a direct query")
        outcome = _dnspython_query(ctx, name, record_type, servers, "the system's DNS servers")
    return outcome


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def _system_lookup(name: str, record_type: str) -> Outcome:
    family = socket.AF_INET if record_type == "A" else socket.AF_INET6
    start = time.perf_counter()
    data = {"name": name, "record_type": record_type, "resolver": "system (getaddrinfo)", "server": None}
    try:
        infos = socket.getaddrinfo(name, None, family, socket.SOCK_STREAM, 0, socket.AI_CANONNAME)
    except socket.gaierror as exc:
        data.update({"answers": [], "elapsed_ms": _ms(start), "error": exc.strerror or str(exc)})
        return Outcome(
            data=data,
            text=f"{name} {record_type}: no answer from the system resolver: {exc.strerror or exc}"
            f" ({data['elapsed_ms']} ms)",
            ok=False,
            error=f"name resolution failed: {exc.strerror or exc}",
        )
    elapsed = _ms(start)
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    canonical = next((info[3] for info in infos if info[3]), None)
    data.update(
        {
            "answers": [{"type": record_type, "value": a} for a in addresses],
            "canonical_name": canonical,
            "elapsed_ms": elapsed,
        }
    )
    text = f"{name} {record_type} via the system resolver ({elapsed} ms):\n" + "\n".join(f"  {a}" for a in addresses)
    if canonical and canonical != name:
        text += f"\ncanonical name: {canonical}"
    return Outcome(data=data, text=text)


def _system_reverse(ip: str) -> Outcome:
    start = time.perf_counter()
    data = {"name": ip, "record_type": "PTR", "resolver": "system (gethostbyaddr)", "server": None}
    try:
        host, aliases, _ = socket.gethostbyaddr(ip)
    except (socket.herror, socket.gaierror) as exc:
        data.update({"answers": [], "elapsed_ms": _ms(start), "error": exc.strerror or str(exc)})
        return Outcome(
            data=data,
            text=f"{ip} PTR: no answer: {exc.strerror or exc}",
            ok=False,
            error=f"reverse lookup failed: {exc.strerror or exc}",
        )
    data.update({"answers": [{"type": "PTR", "value": h} for h in [host, *aliases]], "elapsed_ms": _ms(start)})
    return Outcome(
        data=data,
        text=f"{ip} PTR via the system resolver ({data['elapsed_ms']} ms):\n  " + "\n  ".join([host, *aliases]),
    )


def _system_nameservers() -> list[tuple[str, int]]:
    try:
        import dns.resolver
    except ImportError:
        return []
    try:
        resolver = dns.resolver.Resolver(configure=True)
    except Exception:  # noqa: BLE001 - no resolv.conf / registry: nothing configured
        return []
    return [(ns, resolver.port) for ns in resolver.nameservers]


def _dnspython_query(ctx: Context, name: str, record_type: str, servers: list[tuple[str, int]], label: str) -> Outcome:
    try:
        import dns.exception
        import dns.flags
        import dns.message
        import dns.query
        import dns.rcode
        import dns.rdatatype
        import dns.reversename
    except ImportError:
        raise NotAvailable(f"{record_type} lookups against a DNS server need the dnspython package") from None
    qname = str(dns.reversename.from_address(name)) if record_type == "PTR" and _is_ip(name) else name
    query = dns.message.make_query(qname, dns.rdatatype.from_text(record_type))
    attempts = []
    for ip, port in servers:
        ctx.check()
        start = time.perf_counter()
        try:
            response, used_tcp = dns.query.udp_with_fallback(query, ip, timeout=ctx.remaining(5.0), port=port)
        except (dns.exception.DNSException, OSError) as exc:
            attempts.append(
                {"server": f"{ip}:{port}", "error": str(exc) or type(exc).__name__, "elapsed_ms": _ms(start)}
            )
            continue
        elapsed = _ms(start)
        rcode = dns.rcode.to_text(response.rcode())
        answers = [
            {
                "name": rrset.name.to_text(),
                "type": dns.rdatatype.to_text(rrset.rdtype),
                "ttl": rrset.ttl,
                "value": rdata.to_text(),
            }
            for rrset in response.answer
            for rdata in rrset
        ]
        data = {
            "name": name,
            "query": qname,
            "record_type": record_type,
            "resolver": label,
            "server": f"{ip}:{port}",
            "rcode": rcode,
            "transport": "tcp" if used_tcp else "udp",
            "authoritative": bool(response.flags & dns.flags.AA),
            "answers": answers,
            "elapsed_ms": elapsed,
            "failed_servers": attempts,
        }
        head = f"{qname} {record_type} @ {ip}:{port} ({data['transport']}, {elapsed} ms): {rcode}"
        body = "\n".join(f"  {a['name']} {a['ttl']} {a['type']} {a['value']}" for a in answers) or "  (no records)"
        text = head + "\n" + body
        if rcode != "NOERROR":
            meaning = {
                "NXDOMAIN": "the name does not exist",
                "SERVFAIL": "the server failed to answer",
                "REFUSED": "the server refused the query",
            }.get(rcode, rcode)
            return Outcome(data=data, text=text, ok=False, error=f"{rcode}: {meaning}")
        return Outcome(data=data, text=text)
    data = {
        "name": name,
        "query": qname,
        "record_type": record_type,
        "resolver": label,
        "answers": [],
        "failed_servers": attempts,
    }
    return Outcome(
        data=data,
        text=f"{qname} {record_type}: no DNS server answered:\n"
        + "\n".join(f"  {a['server']}: {a['error']}" for a in attempts),
        ok=False,
        error="no DNS server answered: " + "; ".join(f"{a['server']}: {a['error']}" for a in attempts),
    )


# --- tcp_connect ----------------------------------------------------------------------------


def tcp_connect(ctx: Context) -> Outcome:
    host = ctx.params["host"].strip().strip("[]")
    port = int(ctx.params["port"])
    timeout = float(ctx.params.get("timeout", 5))
    data: dict = {"host": host, "port": port, "timeout_s": timeout}
    start = time.perf_counter()
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        data.update(
            {
                "resolve_ms": _ms(start),
                "error": f"cannot resolve {host}: {exc.strerror or exc}",
                "connected": False,
                "attempts": [],
            }
        )
        return Outcome(
            data=data,
            text=f"TCP {host}:{port}: cannot resolve {host}: {exc.strerror or exc}",
            ok=False,
            error=data["error"],
        )
    data["resolve_ms"] = _ms(start)
    data["addresses"] = list(dict.fromkeys(info[4][0] for info in infos))
    attempts = []
    connected = None
    for family, socktype, proto, _, addr in infos:
        ctx.check()
        sock = socket.socket(family, socktype, proto)
        sock.settimeout(min(timeout, ctx.remaining()))
        t = time.perf_counter()
        try:
            sock.connect(addr)
        except OSError as exc:
            err = "timed out" if isinstance(exc, (socket.timeout, TimeoutError)) else (exc.strerror or str(exc))
            attempts.append(
                {"address": addr[0], "port": addr[1], "connected": False, "elapsed_ms": _ms(t), "error": err}
            )
            sock.close()
            continue
        attempt = {"address": addr[0], "port": addr[1], "connected": True, "elapsed_ms": _ms(t)}
        try:
            attempt["local_address"] = "%s:%s" % sock.getsockname()[:2]
        except OSError:
            pass
        sock.close()
        attempts.append(attempt)
        connected = attempt
        break
    data.update(
        {
            "attempts": attempts,
            "connected": connected is not None,
            "connect_ms": connected["elapsed_ms"] if connected else None,
            "connected_to": connected["address"] if connected else None,
        }
    )
    lines = [
        f"TCP {host}:{port}: "
        + (f"connected to {connected['address']} in {connected['elapsed_ms']} ms" if connected else "could not connect")
        + f" (name resolution {data['resolve_ms']} ms)"
    ]
    for a in attempts:
        lines.append(
            f"  {a['address']}:{a['port']}: " + ("ok" if a["connected"] else a["error"]) + f" ({a['elapsed_ms']} ms)"
        )
    if connected:
        return Outcome(data=data, text="\n".join(lines))
    error = "; ".join(f"{a['address']}: {a['error']}" for a in attempts) or "no address to connect to"
    data["error"] = error
    return Outcome(data=data, text="\n".join(lines), ok=False, error=f"cannot connect to {host}:{port}: {error}")


# --- http_check -------------------------------------------------------------------------------

MAX_REDIRECTS = 5
MAX_BODY = 1024 * 1024


class _Redirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS
    max_repeats = 2

    def __init__(self) -> None:
        self.chain: list[dict] = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        self.chain.append({"status": code, "from": req.full_url, "to": newurl})
        if scheme not in ("http", "https"):
            raise urllib.error.HTTPError(
                req.full_url, code, f"redirect to a {scheme or 'relative'} URL is not followed", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def http_check(ctx: Context) -> Outcome:
    url = ctx.params["url"].strip()
    timeout = float(ctx.params.get("timeout", 10))
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("url must be an http:// or https:// URL with a host")
    data: dict = {"url": url, "timeout_s": timeout}
    tls_context = ssl.create_default_context()  # loading the trust store is not network time
    t0 = time.perf_counter()
    try:
        infos = socket.getaddrinfo(
            parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
        data["addresses"] = list(dict.fromkeys(i[4][0] for i in infos))
    except socket.gaierror as exc:
        data.update({"resolve_ms": _ms(t0), "error": f"cannot resolve {parts.hostname}: {exc.strerror or exc}"})
        return Outcome(data=data, text=f"GET {url}: {data['error']}", ok=False, error=data["error"])
    data["resolve_ms"] = _ms(t0)
    proxy = urllib.request.getproxies().get(parts.scheme.lower())
    if proxy and urllib.request.proxy_bypass(parts.hostname):
        proxy = None
    data["proxy"] = proxy
    redirects = _Redirects()
    opener = urllib.request.build_opener(redirects, urllib.request.HTTPSHandler(context=tls_context))
    request = urllib.request.Request(
        url, headers={"User-Agent": f"caisey-agent/{__version__} http_check", "Accept": "*/*"}
    )
    status = None
    error = ""
    response = None
    start = time.perf_counter()
    try:
        response = opener.open(request, timeout=min(timeout, ctx.remaining()))
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            error = (
                f"more than {MAX_REDIRECTS} redirects (or a redirect loop)"
                if "infinite loop" in str(exc.msg)
                else str(exc.msg)
            )
            status = exc.code
            exc.close()
        else:
            response = exc  # 4xx/5xx: a response all the same
    except urllib.error.URLError as exc:
        error = _url_error(exc.reason)
    except TimeoutError:
        error = f"timed out after {timeout:.0f} s"
    except (OSError, ValueError, ssl.SSLError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    data["response_ms"] = _ms(start)
    final_url = url
    if response is not None:
        status = response.status if hasattr(response, "status") and response.status else response.getcode()
        final_url = response.geturl()
        headers = response.headers
        body_bytes = 0
        try:
            while body_bytes < MAX_BODY:
                ctx.check()
                chunk = response.read(min(65536, MAX_BODY - body_bytes))
                if not chunk:
                    break
                body_bytes += len(chunk)
        except (OSError, ValueError) as exc:
            error = error or f"error while reading the body: {exc}"
        finally:
            response.close()
        data.update(
            {
                "reason": getattr(response, "reason", "") or "",
                "headers": {
                    k: headers[k]
                    for k in (
                        "Content-Type",
                        "Content-Length",
                        "Server",
                        "Location",
                        "Cache-Control",
                        "Strict-Transport-Security",
                    )
                    if headers.get(k)
                },
                "body_bytes_read": body_bytes,
                "body_clipped": body_bytes >= MAX_BODY,
            }
        )
    data["total_ms"] = _ms(t0)
    data.update({"status": status, "final_url": final_url, "redirects": redirects.chain})
    if status is not None and status >= 400 and not error:
        error = f"HTTP {status} {data.get('reason', '')}".strip()
    final = urllib.parse.urlsplit(final_url)
    if final.scheme.lower() == "https" or (parts.scheme.lower() == "https" and status is None):
        target = final if final.scheme.lower() == "https" else parts
        data["tls"] = tls_certificate(target.hostname, target.port or 443, min(timeout, ctx.remaining()))
        tls = data["tls"]
        if not error and tls.get("days_remaining") is not None and tls["days_remaining"] < 0:
            error = f"the TLS certificate expired {-tls['days_remaining']:.0f} days ago"
    else:
        data["tls"] = None
    if error:
        data["error"] = error
    lines = [
        f"GET {url}: "
        + (f"HTTP {status} {data.get('reason', '')}".strip() if status else "no response")
        + (f" — {error}" if error and (status is None or status < 400) else "")
    ]
    for r in redirects.chain:
        lines.append(f"  redirect {r['status']}: {r['from']} -> {r['to']}")
    lines.append(
        kv(
            [
                ("Final URL", final_url),
                ("Addresses", ", ".join(data.get("addresses", []))),
                (
                    "Timing",
                    f"resolve {data['resolve_ms']} ms, response {data['response_ms']} ms, total {data['total_ms']} ms",
                ),
                (
                    "Body",
                    f"{data.get('body_bytes_read', 0)} bytes read" + (" (clipped)" if data.get("body_clipped") else ""),
                ),
                ("Proxy", proxy or "none"),
            ]
        )
    )
    tls = data.get("tls")
    if tls:
        if tls.get("error"):
            lines.append(f"TLS: {tls['error']}")
        else:
            lines.append(
                kv(
                    [
                        (
                            "TLS",
                            f"{tls.get('version')} {tls.get('cipher')}, verified: {fmt(tls.get('verified'))}"
                            + (f" ({tls['verify_error']})" if tls.get("verify_error") else ""),
                        ),
                        ("Certificate", f"{tls.get('subject')} issued by {tls.get('issuer')}"),
                        (
                            "Valid",
                            f"{tls.get('not_before')} to {tls.get('not_after')} ({fmt(tls.get('days_remaining'))} days left)",
                        ),
                    ]
                )
            )
    return Outcome(data=data, text="\n".join(lines), ok=not error, error=error)


def _url_error(reason) -> str:
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {reason.verify_message or reason}"
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(reason, OSError):
        return reason.strerror or str(reason)
    return str(reason)


def tls_certificate(host: str, port: int, timeout: float) -> dict:
    """The server's certificate: verified with the system's trust store, or read unverified to tell why not."""
    info: dict = {"host": host, "port": port}
    context = ssl.create_default_context()
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
                info.update({"verified": True, "version": tls.version(), "cipher": (tls.cipher() or ("",))[0]})
    except ssl.SSLCertVerificationError as exc:
        info.update({"verified": False, "verify_error": exc.verify_message or str(exc)})
        der = None
    except (OSError, ssl.SSLError) as exc:
        info["error"] = f"TLS handshake with {host}:{port} failed: {exc}"
        return info
    if der is None:
        # Unverified: read the certificate anyway to report its names and dates.
        insecure = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection((host, port), timeout=timeout) as raw:
                with insecure.wrap_socket(raw, server_hostname=host) as tls:
                    der = tls.getpeercert(binary_form=True)
                    info.update({"version": tls.version(), "cipher": (tls.cipher() or ("",))[0]})
        except (OSError, ssl.SSLError) as exc:
            info["error"] = f"TLS handshake with {host}:{port} failed: {exc}"
            return info
    if not der:
        return info
    try:
        parsed = certificate_fields(der)
    except ValueError as exc:
        info["certificate_error"] = f"the certificate could not be parsed: {exc}"
        return info
    info.update(
        {
            "subject": parsed["subject"],
            "issuer": parsed["issuer"],
            "subject_alt_names": parsed["subject_alt_names"],
            "not_before": iso(parsed["not_before"]),
            "not_after": iso(parsed["not_after"]),
            "days_remaining": round((parsed["not_after"] - time.time()) / 86400, 1),
        }
    )
    return info


# --- X.509 fields, read with the cryptography package ------------------------------------------


def _name(name) -> str:
    """'CN=..., O=...' in the certificate's order (the two attributes a technician recognises)."""
    from cryptography.x509.oid import NameOID

    labels = {NameOID.COMMON_NAME: "CN", NameOID.ORGANIZATION_NAME: "O"}
    parts = []
    for rdn in name.rdns:
        for attr in rdn:
            label = labels.get(attr.oid)
            if label:
                value = attr.value if isinstance(attr.value, str) else attr.value.decode("utf-8", "replace")
                parts.append(f"{label}={value}")
    return ", ".join(parts)


def certificate_fields(der: bytes) -> dict:
    """Subject, issuer, subject alternative names (DNS names and IP addresses) and validity of a DER certificate.

    cryptography is imported here, not with the module: its Rust extension does not load under Wine
    (which lacks ProcessPrng), and the other network diagnostics must not depend on it."""
    try:
        from cryptography import x509
    except ImportError as exc:
        raise ValueError(f"the cryptography package cannot be loaded: {exc}") from None
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        alt_names = [str(g.value) for g in san if isinstance(g, (x509.DNSName, x509.IPAddress))]
    except x509.ExtensionNotFound:
        alt_names = []
    except ValueError:  # a malformed extension: report the rest
        alt_names = []
    return {
        "subject": _name(cert.subject),
        "issuer": _name(cert.issuer),
        "subject_alt_names": alt_names,
        "not_before": cert.not_valid_before_utc.timestamp(),
        "not_after": cert.not_valid_after_utc.timestamp(),
    }
