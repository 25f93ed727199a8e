"""ldap_check: an LDAP bind and a search, spoken with ldap3 (a pure-Python RFC 4511 client).

Binds anonymously, or with ``bind_dn`` and ``password`` (a simple bind; the password is a "secret"
parameter: the server keeps it sealed and wipes it when the action is final, and it never appears in
the result or the agent's log). A password is sent only over LDAPS (``tls``): refused otherwise, before
anything is sent. Then reads the RootDSE (base "" scope base): naming contexts, the DC's DNS name, its time,
whether it is synchronised, functional levels. With ``base_dn``, also checks that this entry
exists and is readable (scope base, (objectClass=*)). Works on every platform.

With ``tls`` the connection is LDAPS, verified like every other TLS connection of the agent:
the system's trust store (plus ``SSL_CERT_FILE``, which the Windows service sets from the MSI's
``CA_BUNDLE``) and the certificate's names checked against ``host``.
"""

from __future__ import annotations

import ssl
import time

import ldap3
from ldap3.core.exceptions import LDAPException, LDAPSocketOpenError

from caisey_agent.diagnostics import Context, Outcome
from caisey_agent.diagnostics.render import kv

ROOTDSE_ATTRS = (
    "defaultNamingContext",
    "rootDomainNamingContext",
    "namingContexts",
    "dnsHostName",
    "serverName",
    "currentTime",
    "isSynchronized",
    "isGlobalCatalogReady",
    "domainFunctionality",
    "forestFunctionality",
    "domainControllerFunctionality",
    "supportedLDAPVersion",
    "vendorName",
)


def result_of(conn: ldap3.Connection) -> dict:
    """The last operation's LDAPResult, in the shape this diagnostic has always reported."""
    res = conn.result or {}
    code = int(res.get("result", -1))
    return {
        "code": code,
        "result": res.get("description") or str(code),
        "matched_dn": res.get("dn") or "",
        "message": res.get("message") or "",
    }


def search(conn: ldap3.Connection, base: str, attributes: tuple[str, ...]) -> tuple[dict, list]:
    """A base-scope (objectClass=*) search: (its result, [(dn, {attribute: [values]})])."""
    conn.search(
        base, "(objectClass=*)", search_scope=ldap3.BASE, attributes=list(attributes), size_limit=1, time_limit=10
    )
    entries = [
        (
            item["dn"],
            {
                name: [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]
                for name, values in item["raw_attributes"].items()
            },
        )
        for item in conn.response or ()
        if item.get("type") == "searchResEntry"
    ]
    return result_of(conn), entries


def ldap_check(ctx: Context) -> Outcome:
    host = ctx.params["host"]
    tls = bool(ctx.params.get("tls"))
    port = int(ctx.params.get("port") or (636 if tls else 389))
    base_dn = ctx.params.get("base_dn") or ""
    bind_dn, password = ctx.params.get("bind_dn") or "", ctx.params.get("password") or ""
    timeout = ctx.remaining(15)
    data: dict = {"host": host, "port": port, "tls": tls}
    if bool(bind_dn) != bool(password):
        data["error"] = "bind_dn and password go together"  # an empty password binds unauthenticated
        return Outcome(data=data, text=data["error"], ok=False, error=data["error"])
    if password and not tls:
        data["error"] = "a password is sent only over LDAPS: set tls (port 636)"
        return Outcome(data=data, text=data["error"], ok=False, error=data["error"])
    server = ldap3.Server(
        host,
        port=port,
        use_ssl=tls,
        # ldap3 verifies nothing unless told to (its default is CERT_NONE).
        tls=ldap3.Tls(validate=ssl.CERT_REQUIRED, sni=host) if tls else None,
        get_info=ldap3.NONE,
        connect_timeout=timeout,
    )
    credentials = {"user": bind_dn, "password": password, "authentication": ldap3.SIMPLE} if bind_dn else {}
    conn = ldap3.Connection(server, receive_timeout=timeout, read_only=True, raise_exceptions=False, **credentials)
    start = time.perf_counter()
    try:
        conn.open()
    except LDAPSocketOpenError as exc:
        data["error"] = f"cannot connect to {host}:{port}: {exc}"
        return Outcome(data=data, text=data["error"], ok=False, error=data["error"])
    except LDAPException as exc:
        data["error"] = f"LDAP conversation with {host}:{port} failed: {exc}"
        return Outcome(data=data, text=data["error"], ok=False, error=data["error"])
    data["connect_ms"] = round((time.perf_counter() - start) * 1000, 2)
    try:
        t = time.perf_counter()
        conn.bind()
        data["bind"] = {
            **result_of(conn),
            "anonymous": not bind_dn,
            **({"as": bind_dn} if bind_dn else {}),
            "ms": round((time.perf_counter() - t) * 1000, 2),
        }
        t = time.perf_counter()
        result, entries = search(conn, "", ROOTDSE_ATTRS)
        data["rootdse"] = entries[0][1] if entries else {}
        data["rootdse_result"] = result["result"]
        data["search_ms"] = round((time.perf_counter() - t) * 1000, 2)
        if base_dn:
            result, entries = search(conn, base_dn, ("distinguishedName",))
            data["base_dn"] = {"dn": base_dn, **result, "found": bool(entries)}
    except (LDAPException, OSError) as exc:
        data["error"] = f"LDAP conversation with {host}:{port} failed: {exc}"
        return Outcome(data=data, text=data["error"], ok=False, error=data["error"])
    finally:
        try:
            conn.unbind()
        except (LDAPException, OSError):
            pass  # the server went first: nothing left to close politely
    return ldap_outcome(data)


def ldap_outcome(data: dict) -> Outcome:
    root = data.get("rootdse", {})
    problems = []
    bind = data["bind"]
    who = "anonymous bind" if bind["anonymous"] else f"bind as {bind['as']}"
    if bind["code"] != 0:
        problems.append(f"{who} refused: {bind['result']} {bind['message']}".strip())
    if not root:
        problems.append("the RootDSE could not be read")
    base = data.get("base_dn")
    if base and not base["found"]:
        problems.append(f"{base['dn']}: {base['result']} {base['message']}".strip())
    first = lambda name: (root.get(name) or [None])[0]  # noqa: E731
    text = kv(
        [
            (
                "Server",
                f"{data['host']}:{data['port']}{' (LDAPS)' if data['tls'] else ''}, connected in {data['connect_ms']} ms",
            ),
            ("Bind", f"{who}: {bind['result']} in {bind['ms']} ms"),
            ("DNS host name", first("dnsHostName")),
            ("Default naming context", first("defaultNamingContext")),
            ("Server time", first("currentTime")),
            ("Synchronized", first("isSynchronized")),
            ("Search", f"{data.get('rootdse_result')} in {data.get('search_ms')} ms"),
        ]
        + ([("Base DN", f"{base['dn']}: {'found' if base['found'] else base['result']}")] if base else [])
    )
    return Outcome(data=data, text=text, ok=not problems, error="; ".join(problems))
