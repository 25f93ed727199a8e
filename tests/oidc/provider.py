"""A real OpenID Connect provider for tests: panva's oidc-provider (OpenID Certified) from the
npm registry, run with this machine's Node.js.

``install()`` puts the version pinned in package.json into a cache folder outside the
repository (``$CAISEY_TEST_CACHE`` or ~/.cache/caisey; nothing under node_modules is committed)
once; ``running()`` starts provider.mjs on a free loopback port and stops it afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE / "package.json"
SCRIPT = HERE / "provider.mjs"


class Unavailable(Exception):
    """Node.js or npm is missing, or the package could not be installed."""


def cache_dir() -> Path:
    root = Path(os.environ.get("CAISEY_TEST_CACHE") or Path.home() / ".cache" / "caisey")
    digest = hashlib.sha256(PACKAGE.read_bytes()).hexdigest()[:12]
    return root / f"oidc-provider-{digest}"


def install() -> Path:
    folder = cache_dir()
    if (folder / "node_modules" / "oidc-provider" / "package.json").is_file():
        return folder
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise Unavailable("Node.js and npm are needed to run the test OpenID provider (apt-get install nodejs npm)")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PACKAGE, folder / "package.json")
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--omit=dev"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise Unavailable(f"npm install of oidc-provider failed:\n{result.stdout}{result.stderr}")
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running(*, client_id: str, client_secret: str, redirect_uris: list[str], accounts: dict) -> Iterator[str]:
    """Start the provider; yield its issuer URL (http://localhost:<port>)."""
    folder = install()
    shutil.copyfile(SCRIPT, folder / "provider.mjs")
    port = free_port()
    config = {
        "port": port,
        "client_id": client_id,
        "client_secret": client_secret,
        "redirect_uris": redirect_uris,
        "accounts": accounts,
    }
    log = open(folder / f"provider-{port}.log", "w+b")
    proc = subprocess.Popen(
        ["node", "provider.mjs"],
        cwd=folder,
        env={**os.environ, "OIDC_CONFIG": json.dumps(config)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    issuer = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration", timeout=2) as response:
                    if json.loads(response.read())["issuer"] == issuer:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise Unavailable(f"the test OpenID provider did not start:\n{log.read().decode(errors='replace')}")
            time.sleep(0.2)
        yield issuer
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
