"""A real Caisey stack in child processes, for end-to-end tests.

Each stack gets its own data folder and database (a SQLite file, or a fresh
PostgreSQL database when the suite runs against PostgreSQL) and its own key
prefix in Redis, so stacks of parallel test workers never see each other.
Agents are real `caisey-agent` processes.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from django.conf import settings

from caisey import embedded_redis
from caisey.daphne import daphne_argv
from caisey.worker import celery_worker_argv
from caisey_agent.policy import write_policy as write_local_policy

REPO = Path(__file__).resolve().parents[2]
AGENT_BIN = [sys.executable, "-m", "caisey_agent"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, *, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the thing may not be up yet
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else "")
    )


def run_async(coro):
    """asyncio.run in a thread of its own: the worker's main thread may already run a loop
    (Playwright's sync API keeps one there once a browser test has run in the same worker)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Database:
    """A migrated database of the suite's kind for one stack, cloned from a template that is
    migrated once per test process (migrating for every stack would cost seconds each)."""

    _templates: dict[str, str] = {}
    _lock = threading.Lock()

    def __init__(self, workdir: Path) -> None:
        base = settings.DATABASES["default"]
        self.is_postgres = "postgresql" in base["ENGINE"]
        if self.is_postgres:
            self._admin = dict(
                host=base["HOST"] or "127.0.0.1",
                port=base["PORT"] or 5432,
                user=base["USER"],
                password=base["PASSWORD"] or None,
            )
            self.name = f"caisey_e2e_{uuid.uuid4().hex[:12]}"
            template = self._template()
            self._sql(f'CREATE DATABASE "{self.name}" TEMPLATE "{template}"')
            self.url = self._pg_url(self.name)
        else:
            target = workdir / "caisey.sqlite3"
            shutil.copyfile(self._template(), target)
            self.url = f"sqlite:///{target}"

    def _pg_url(self, name: str) -> str:
        parts = urllib.parse.urlsplit(settings.DATABASE_URL)
        return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))

    def _sql(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(dbname="postgres", autocommit=True, **self._admin) as conn:
            conn.execute(statement)

    def _template(self) -> str:
        kind = "pg" if self.is_postgres else "sqlite"
        with self._lock:
            if kind not in self._templates:
                if self.is_postgres:
                    name = f"caisey_e2e_tpl_{uuid.uuid4().hex[:8]}"
                    self._sql(f'CREATE DATABASE "{name}"')
                    url, made = self._pg_url(name), name
                    atexit.register(self._sql, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                else:
                    folder = Path(tempfile.mkdtemp(prefix="caisey-e2e-template-"))
                    atexit.register(shutil.rmtree, folder, True)
                    made = str(folder / "template.sqlite3")
                    url = f"sqlite:///{made}"
                env = {**os.environ, "CAISEY_DATABASE_URL": url, "CAISEY_DATA_DIR": str(Path(tempfile.gettempdir()))}
                env.pop("DJANGO_SETTINGS_MODULE", None)
                subprocess.run(
                    [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=env, check=True, timeout=300
                )
                self._templates[kind] = made
            return self._templates[kind]

    def drop(self) -> None:
        if self.is_postgres:
            self._sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class AgentProcess:
    def __init__(self, stack: Stack, state_dir: Path, log: Path) -> None:
        self.stack = stack
        self.state_dir = state_dir
        self.log = log
        self.proc: subprocess.Popen | None = None

    def prompts(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*AGENT_BIN, "prompts", *args, "--state-dir", str(self.state_dir)],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def start(self, *extra: str) -> AgentProcess:
        self.proc = self.stack.spawn(
            [*AGENT_BIN, "run", "--state-dir", str(self.state_dir), "--backoff-cap", "2", *extra], self.log
        )
        return self

    def status(self) -> dict:
        out = subprocess.run(
            [*AGENT_BIN, "status", "--state-dir", str(self.state_dir)], capture_output=True, text=True, check=True
        )
        return json.loads(out.stdout)

    @property
    def endpoint_id(self) -> str:
        return self.status()["endpoint_id"]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


class Stack:
    """Daphne (one or more), optionally a Celery worker with beat, against one database and Redis."""

    def __init__(self, *, extra_env: dict[str, str] | None = None, own_redis: bool = False) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="caisey-e2e-"))
        self.db = Database(self.workdir)
        self.prefix = f"e2e{uuid.uuid4().hex[:10]}"
        # A stack whose Redis a drill may stop: never the one other tests share.
        self.redis_dir = self.workdir / "redis" if own_redis else None
        redis_url = settings.REDIS_URL
        if self.redis_dir is not None:
            embedded_redis.ensure_running(self.redis_dir)
            redis_url = embedded_redis.url_for(self.redis_dir)
        self.env = {
            **os.environ,
            "CAISEY_DATA_DIR": str(self.workdir),
            "CAISEY_DATABASE_URL": self.db.url,
            "CAISEY_REDIS_URL": redis_url,
            "CAISEY_REDIS_PREFIX": self.prefix,
            "CAISEY_PRESENCE_SWEEP_S": "1",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.procs: list[subprocess.Popen] = []
        self.servers: dict[int, subprocess.Popen] = {}
        self.agents: list[AgentProcess] = []
        self._shell: subprocess.Popen | None = None
        self._shell_lock = threading.Lock()

    # --- processes -------------------------------------------------------------

    def spawn(self, argv: list[str], log: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            argv, cwd=REPO, env=self.env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def manage(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=120
        )
        if out.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def migrate(self) -> Stack:
        """Bring the stack's (template-cloned) database to the newest migrations, as a deploy would."""
        self.manage("migrate", "-v", "0")
        return self

    def start_server(self, port: int | None = None) -> int:
        port = port or free_port()
        proc = self.spawn(
            daphne_argv(sys.executable, host="127.0.0.1", port=port),
            self.workdir / f"daphne-{port}.log",
        )
        self.servers[port] = proc
        wait_for(lambda: self.http_get(port, "/healthz").status == 200, timeout=30, what=f"daphne on {port}")
        return port

    def stop_server(self, port: int, sig: int = signal.SIGTERM) -> None:
        proc = self.servers.pop(port)
        os.killpg(proc.pid, sig)
        proc.wait(timeout=15)

    def start_worker(self) -> subprocess.Popen:
        return self.spawn(
            celery_worker_argv(sys.executable, schedule=self.workdir / "beat-schedule", concurrency=1),
            self.workdir / "celery.log",
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.db.drop()

    def restart_redis(self, down_for: float = 2.0) -> None:
        embedded_redis.stop(self.redis_dir)
        time.sleep(down_for)
        embedded_redis.ensure_running(self.redis_dir)

    def cleanup(self) -> None:
        self.stop()
        if self.redis_dir is not None:
            embedded_redis.stop(self.redis_dir)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def logs(self) -> str:
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            parts.append(f"----- {path.name}\n{path.read_text()[-4000:]}")
        return "\n".join(parts)

    # --- tenants and agents -------------------------------------------------------

    def seed(
        self, *, tenant: str = "acme", group: str = "erp", password: str = "e2e-password-1", mfa_required: bool = False
    ) -> dict:
        """A tenant with an admin and a technician, and one client group (through the services).
        Its members need no second factor unless the test asks (tests/browser/test_identity.py)."""
        self.django(
            "from caisey.actors import Party; from endpoints import services; from endpoints.models import Role;"
            f"t = services.tenant_create(name='{tenant} MSP', slug='{tenant}', admin_username='{tenant}-admin',"
            f" admin_password='{password}', mfa_required={mfa_required});"
            f"services.client_group_create(actor=Party.OPERATOR, tenant=t, name='{group} client', slug='{group}');"
            f"services.membership_create(tenant=t, username='{tenant}-tech', password='{password}',"
            " role=Role.TECHNICIAN)"
        )
        return {"username": f"{tenant}-tech", "password": password, "tenant": tenant, "group": group}

    def django(self, code: str) -> str:
        """Run Python against this stack's database, in a Django process kept for the stack."""
        with self._shell_lock:
            if self._shell is None or self._shell.poll() is not None:
                self._shell = subprocess.Popen(
                    [sys.executable, str(Path(__file__).with_name("shell_server.py"))],
                    cwd=REPO,
                    env=self.env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=open(self.workdir / "shell.log", "ab"),
                    text=True,
                    start_new_session=True,
                )
                self.procs.append(self._shell)
            self._shell.stdin.write(json.dumps(code) + "\n")
            self._shell.stdin.flush()
            line = self._shell.stdout.readline()
        if not line:
            raise AssertionError(f"the stack's Django shell died; see {self.workdir / 'shell.log'}")
        reply = json.loads(line)
        if not reply["ok"]:
            raise AssertionError(f"snippet failed:\n{code}\n{reply['err']}")
        return reply["out"]

    def json(self, code: str):
        """Evaluate code that prints one JSON document as its last line; return it parsed."""
        return json.loads(self.django(code).strip().splitlines()[-1])

    def token(self, tenant: str, group: str, max_uses: int = 1) -> str:
        return self.django(
            "from datetime import timedelta; from caisey.actors import Party; from endpoints import services;"
            " from endpoints.models import ClientGroup;"
            f"g = ClientGroup.all_tenants.get(tenant__slug='{tenant}', slug='{group}');"
            f"print(services.enrollment_token_issue(actor=Party.OPERATOR, client_group=g, expires_in=timedelta(hours=1),"
            f" max_uses={max_uses})[1])"
        ).strip()

    def enroll_agent(self, port: int, token: str, name: str | None = None) -> AgentProcess:
        name = name or f"agent{len(self.agents) + 1}"
        state_dir = self.workdir / name
        out = subprocess.run(
            [
                *AGENT_BIN,
                "enroll",
                "--server",
                f"http://127.0.0.1:{port}",
                "--token",
                token,
                "--state-dir",
                str(state_dir),
                "--hostname",
                name,
            ],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode != 0:
            raise AssertionError(f"enroll failed: {out.stdout}{out.stderr}")
        # The explicit local policy an installer writes: without it the agent refuses shell commands.
        write_local_policy(state_dir, {"allow_shell": True})
        agent = AgentProcess(self, state_dir, self.workdir / f"{name}.log")
        self.agents.append(agent)
        return agent

    # --- HTTP as a technician ---------------------------------------------------------

    def http_get(self, port: int, path: str, opener=None):
        opener = opener or urllib.request.build_opener()
        return opener.open(f"http://127.0.0.1:{port}{path}", timeout=10)

    def login(self, port: int, username: str, password: str) -> Console:
        return Console(port, username, password)


class Console:
    """A technician's browser-less session: cookies, CSRF, page fetches."""

    def __init__(self, port: int, username: str, password: str) -> None:
        self.port = port
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.base = f"http://127.0.0.1:{port}"
        page = self.get("/login/")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        data = urllib.parse.urlencode({"login": username, "password": password, "csrfmiddlewaretoken": csrf}).encode()
        request = urllib.request.Request(f"{self.base}/login/", data=data, headers={"Referer": f"{self.base}/login/"})
        response = self.opener.open(request, timeout=10)
        if urllib.parse.urlparse(response.url).path == "/login/":  # a successful login redirects away
            raise AssertionError("console login failed: " + response.read().decode()[-2000:])

    def get(self, path: str) -> str:
        return self.opener.open(f"{self.base}{path}", timeout=10).read().decode()

    def cookie_header(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.jar)

    def presence_on_list(self, hostname: str) -> str | None:
        page = self.get(f"/?q={hostname}")
        match = re.search(rf">{re.escape(hostname)}</a>.*?data-field=\"presence\"[^>]*>(\w+)<", page, re.S)
        return match.group(1) if match else None
