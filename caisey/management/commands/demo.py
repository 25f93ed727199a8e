"""`manage.py demo`: the whole stack on this machine, in the foreground.

Embedded Redis (unless CAISEY_REDIS_URL is set), migrations, a demo tenant with
known logins, the server as production runs it (`manage.py serve`: Daphne processes
sharing one socket, the Celery worker and beat, supervised), and a local agent
enrolled into the demo tenant. Ctrl-C stops everything this command started.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction

from caisey import demo_fleet, embedded_redis, tenancy
from caisey.actors import Party
from caisey.env import env_str
from caisey.errors import Rejected
from endpoints import services
from endpoints.models import ClientGroup, Endpoint, EndpointStatus, Membership, Presence, Role, Tenant
from endpoints.presence import presence_of

TENANT_SLUG, TENANT_NAME = "demo", "Demo MSP"
CLIENT_GROUPS = [("acme", "Acme Manufacturing"), ("brightside", "Brightside Dental")]
AGENT_GROUP = "acme"
DEFAULT_PASSWORD = "caisey-demo"
SERVE_STOP_TIMEOUT = 8.0  # seconds each stage of `serve` (Daphne, beat, worker) gets after SIGTERM
STOP_GRACE = 3 * SERVE_STOP_TIMEOUT + 6.0  # seconds a child gets after SIGTERM before SIGKILL
HEALTH_TIMEOUT = 60.0
ONLINE_TIMEOUT = 60.0  # seconds for the local agent, and the simulated fleet, to connect


class StackFailure(Exception):
    """A child died or never became ready; ``name`` says which."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class Stack:
    """The child processes: `serve` and the agent. Each gets its own process group, so
    that the terminal's Ctrl-C reaches only us: we stop the children, in order (`serve`
    stops its own children, in their order)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.children: dict[str, subprocess.Popen] = {}

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self, name: str, argv: list[str]) -> None:
        with open(self.log_path(name), "wb") as log:  # the child keeps its own copy of the fd
            self.children[name] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=settings.BASE_DIR,
                start_new_session=True,
            )

    def check(self) -> None:
        for name, proc in self.children.items():
            code = proc.poll()
            if code is not None:
                how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
                raise StackFailure(name, f"{name} {how} unexpectedly")

    def tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path(name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        procs = list(reversed(self.children.values()))  # the agent first, the server last
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left in a group (a stuck child, or a grandchild whose parent
        # already exited) is killed: the demo leaves no process behind.
        for proc in procs:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        self.children.clear()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session made the child its group's leader
    except ProcessLookupError:
        pass  # the group is empty already


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def free_port(start: int) -> int:
    for port in range(start, start + 50):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                continue  # something answers there
        with socket.socket() as probe:
            # SO_REUSEADDR as Daphne sets it: TIME_WAIT leftovers of a previous run do not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise CommandError(f"no free port in {start}..{start + 49}; pass --port")


class Command(BaseCommand):
    help = (
        "Run Caisey on this machine: embedded Redis, migrations, a demo tenant, the server "
        "(`manage.py serve`: Daphne processes, the Celery worker and beat) and a local agent. "
        "Ctrl-C stops it all."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000, help="first port to try (default 8000)")
        parser.add_argument(
            "--workers", type=int, default=None, help="Daphne processes (default: one per core, as `serve`)"
        )
        parser.add_argument(
            "--no-sim-fleet",
            action="store_true",
            help="no simulated fleet beside the local agent (by default a few simulated agents, marked so, "
            "show every connectivity state: lazy, active, degraded through a slow link, offline with queued actions)",
        )

    def handle(self, *args, **opts):
        data_dir: Path = settings.DATA_DIR
        log_dir = data_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        lock = self._lock(data_dir)
        # SIGTERM and a closed terminal stop the demo the way Ctrl-C does (unless
        # started under nohup, which asks to survive the terminal).
        signal.signal(signal.SIGTERM, _interrupt)
        if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
            signal.signal(signal.SIGHUP, _interrupt)
        env = {**os.environ, "CAISEY_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
        stack = Stack(env, log_dir)
        redis_started = False
        failure = None
        try:
            if settings.EMBEDDED_REDIS:
                try:
                    redis_started = embedded_redis.ensure_running(data_dir)
                except (RuntimeError, subprocess.CalledProcessError) as exc:
                    raise CommandError(f"the embedded Redis did not start: {exc}") from None
            self.stdout.write(f"Data folder: {data_dir}")
            self.stdout.write("Applying migrations ...")
            call_command("migrate", interactive=False, verbosity=0)
            password = env_str("CAISEY_DEMO_PASSWORD", DEFAULT_PASSWORD)
            tenant = self._seed(password)

            port = free_port(opts["port"])
            url = f"http://127.0.0.1:{port}"
            py = sys.executable
            serve = [py, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port), "--log-dir", str(log_dir)]
            serve += ["--stop-timeout", str(SERVE_STOP_TIMEOUT)]
            if opts["workers"] is not None:
                serve += ["--workers", str(opts["workers"])]
            stack.start("server", serve)
            self.stdout.write(f"Starting the server on {url} (Daphne processes, the Celery worker and beat) ...")
            self._wait_healthy(stack, url)

            state_dir = data_dir / "demo-agent"
            endpoint_id = self._enroll_agent(url, tenant, state_dir, env)
            # An explicit local policy: without one the agent refuses shell commands. The server's
            # approval policy for the group still asks the user first (shell and built-in commands).
            self._agent_allows_shell(state_dir, env)
            stack.start("agent", [py, "-m", "caisey_agent", "run", "--state-dir", str(state_dir)])
            fleet = None if opts["no_sim_fleet"] else self._start_fleet(stack, url, tenant, data_dir)
            self._wait_online(stack, "agent", "the local agent", lambda: self._online(tenant, endpoint_id))
            if fleet is not None:
                self._wait_online(
                    stack,
                    "sim-fleet",
                    "the simulated fleet",
                    lambda: demo_fleet.on_the_wire(tenant=tenant, rows=fleet),
                )
                for done in demo_fleet.set_the_scene(tenant=tenant, rows=fleet, technician="tech"):
                    self.stdout.write(f"Simulated fleet: {done}")
            self._banner(url, password, data_dir, log_dir, fleet=fleet)
            while True:
                stack.check()
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        except StackFailure as exc:
            failure = exc
            self.stderr.write(f"\n{exc}. Last lines of {stack.log_path(exc.name)}:\n")
            self.stderr.write(stack.tail(exc.name) or "(empty)")
        finally:
            # A second Ctrl-C must not cut the clean-up short: it is bounded anyway.
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
            if stack.children:
                self.stdout.write(f"\nStopping {', '.join(stack.children)} (up to {STOP_GRACE:.0f} s) ...")
            stack.stop()
            if redis_started:
                embedded_redis.stop(data_dir)
            lock.close()
        if failure is not None:
            raise CommandError(f"demo stopped: {failure}")
        self.stdout.write("Stopped.")

    def _lock(self, data_dir: Path):
        """One demo per data folder: two would share the agent identity and the beat schedule."""
        lock = open(data_dir / "demo.lock", "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise CommandError(
                f"a demo is already running with data folder {data_dir} (pid {lock.read().strip() or '?'}); "
                "stop it, or set CAISEY_DATA_DIR to another folder"
            ) from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        return lock

    @transaction.atomic
    def _seed(self, password: str) -> Tenant:
        """The demo tenant, its two users and client groups: created once, reused after.
        Setting up a tenant is system work, named so (``tenancy.system()``)."""
        with tenancy.system():
            return self._seed_tenant(password)

    def _seed_tenant(self, password: str) -> Tenant:
        User = get_user_model()
        tenant = Tenant.objects.filter(slug=TENANT_SLUG).first()
        try:
            if tenant is None:
                # The demo tenant does not require a second factor: a newcomer logs in with the
                # printed password in seconds. The banner says so; new tenants require one.
                tenant = services.tenant_create(
                    name=TENANT_NAME,
                    slug=TENANT_SLUG,
                    admin_username="admin",
                    admin_password=password,
                    mfa_required=False,
                )
            for username, role in (("admin", Role.ADMIN), ("tech", Role.TECHNICIAN)):
                user = User.objects.filter(username=username).first()
                if user is None:
                    services.membership_create(tenant=tenant, username=username, password=password, role=role)
                    continue
                if not Membership.objects.filter(user=user, tenant=tenant).exists():
                    raise CommandError(f"user {username!r} exists outside the demo tenant")
                # Set on every run, so that the password the banner shows is the one that works.
                services.password_check(password=password, user=user)
                user.set_password(password)
                user.save(update_fields=["password"])
            for slug, name in CLIENT_GROUPS:
                if not ClientGroup.objects.filter(tenant=tenant, slug=slug).exists():
                    services.client_group_create(actor=Party.OPERATOR, tenant=tenant, name=name, slug=slug)
        except (IntegrityError, CommandError, Rejected) as exc:
            raise CommandError(
                f"cannot set up the demo tenant in this database ({exc}); "
                "point CAISEY_DATA_DIR (or CAISEY_DATABASE_URL) at a fresh one"
            ) from None
        return tenant

    def _wait_healthy(self, stack: Stack, url: str) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while time.monotonic() < deadline:
            stack.check()
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                    if json.loads(response.read()).get("status") == "ok":
                        return
            except (OSError, ValueError):
                pass  # not listening yet
            time.sleep(0.25)
        raise StackFailure("server", f"the server did not answer {url}/healthz within {HEALTH_TIMEOUT:.0f} s")

    def _agent_allows_shell(self, state_dir: Path, env: dict[str, str]) -> None:
        argv = [sys.executable, "-m", "caisey_agent", "policy", "--allow-shell", "--state-dir", str(state_dir)]
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise CommandError(f"writing the local agent's policy failed:\n{(result.stderr or result.stdout).strip()}")

    def _enroll_agent(self, url: str, tenant: Tenant, state_dir: Path, env: dict[str, str]) -> str:
        """Enroll the local agent unless its identity is good for this server as it runs now;
        returns its endpoint id."""
        agent = [sys.executable, "-m", "caisey_agent"]
        status = subprocess.run(
            [*agent, "status", "--state-dir", str(state_dir)], env=env, capture_output=True, text=True, timeout=60
        )
        if status.returncode != 0:
            raise CommandError(f"`caisey-agent status` failed:\n{status.stderr.strip()}")
        current = json.loads(status.stdout)
        replace = current["enrolled"]
        if not current["enrolled"]:
            reason = "Enrolling the local agent"
        elif current["server"] != url:
            # The agent connects to the address it enrolled with; the port may differ this time.
            reason = f"Re-enrolling the local agent (server moved from {current['server']} to {url})"
        elif not self._knows_endpoint(tenant, current["endpoint_id"]):
            reason = "Re-enrolling the local agent (this database does not know its endpoint)"
        else:
            return current["endpoint_id"]
        with tenancy.bind(tenant.pk):
            group = ClientGroup.objects.get(slug=AGENT_GROUP)
        _, token = services.enrollment_token_issue(
            actor=Party.OPERATOR, client_group=group, expires_in=timedelta(minutes=10), note="demo launcher"
        )
        self.stdout.write(f"{reason} into {group.name} ...")
        argv = [*agent, "enroll", "--server", url, "--token", token, "--state-dir", str(state_dir)]
        if replace:
            argv.append("--replace")
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise CommandError(
                f"enrolling the local agent failed:\n{(result.stderr or result.stdout).strip()}\n"
                f"(to start over with a new agent identity, delete {state_dir})"
            )
        self.stdout.write(result.stdout.strip())
        status = subprocess.run(
            [*agent, "status", "--state-dir", str(state_dir)], env=env, capture_output=True, text=True, timeout=60
        )
        if status.returncode != 0:
            raise CommandError(f"`caisey-agent status` failed after enrolling:\n{status.stderr.strip()}")
        return json.loads(status.stdout)["endpoint_id"]

    def _start_fleet(self, stack: Stack, url: str, tenant: Tenant, data_dir: Path) -> list[dict]:
        """The simulated fleet (caisey/demo_fleet.py): enrolled through the enrollment API, run by
        bench/sim_fleet.py as one more child."""
        folder = data_dir / "sim-fleet"
        self.stdout.write(
            f"Starting the simulated fleet ({len(demo_fleet.FLEET)} agents; --no-sim-fleet to leave it out) ..."
        )
        try:
            rows = demo_fleet.enroll(url=url, tenant=tenant, state_file=folder / "identities.json")
        except RuntimeError as exc:
            raise CommandError(str(exc)) from None
        agents = folder / "agents.json"
        demo_fleet.agents_file(rows, agents)
        ws_url = url.replace("http://", "ws://", 1) + "/ws/agent/"
        script = Path(settings.BASE_DIR) / "bench" / "sim_fleet.py"
        stack.start("sim-fleet", [sys.executable, str(script), "--url", ws_url, "--agents", str(agents)])
        return rows

    def _wait_online(self, stack: Stack, name: str, what: str, ready) -> None:
        deadline = time.monotonic() + ONLINE_TIMEOUT
        while time.monotonic() < deadline:
            stack.check()
            if ready():
                return
            time.sleep(0.2)
        raise StackFailure(name, f"{what} did not come online within {ONLINE_TIMEOUT:.0f} s")

    @staticmethod
    def _online(tenant: Tenant, endpoint_id: str) -> bool:
        with tenancy.bind(tenant.pk):
            endpoint = Endpoint.objects.filter(pk=endpoint_id).first()
        return endpoint is not None and presence_of(endpoint) != Presence.OFFLINE

    @staticmethod
    def _knows_endpoint(tenant: Tenant, endpoint_id: str) -> bool:
        with tenancy.bind(tenant.pk):
            return Endpoint.objects.filter(pk=endpoint_id, status=EndpointStatus.ENROLLED).exists()

    def _banner(self, url: str, password: str, data_dir: Path, log_dir: Path, *, fleet: list[dict] | None) -> None:
        rule = "-" * 72
        if fleet is None:
            simulated = "  Simulated    none (--no-sim-fleet)\n"
        else:
            shows: dict[str, list[str]] = {}
            for row in fleet:
                shows.setdefault(row["shows"], []).append(row["hostname"])
            simulated = (
                f'  Simulated    {len(fleet)} endpoints, badged "simulated" in the console (bench/sim_fleet.py,\n'
                f"               the real protocol, no machine behind them); --no-sim-fleet leaves them out:\n"
                + "".join(f"                 {state:<9} {', '.join(names)}\n" for state, names in shows.items())
                + f"               (degraded: its link answers {demo_fleet.link_delay():g} s late, which the server's\n"
                f"               health figures show within seconds of the session opened on it)\n"
            )
        self.stdout.write(
            f"\n{rule}\n"
            f"  Caisey is running.\n\n"
            f"  Console      {url}/\n"
            f"  Technician   tech / {password}\n"
            f"  Admin        admin / {password}   (Django admin: {url}/admin/)\n"
            f"  Second factor optional in the demo tenant (new tenants require one); enrol one at "
            f"{url.replace('127.0.0.1', 'localhost')}/accounts/2fa/ (passkeys need localhost or https)\n"
            f"  Local agent  online, in {dict(CLIENT_GROUPS)[AGENT_GROUP]}; state in {data_dir / 'demo-agent'}\n"
            f"{simulated}"
            f"  Logs         {log_dir}/ (server.log, daphne-N.log, celery-worker.log, celery-beat.log, agent.log,\n"
            f"               sim-fleet.log)\n"
            f"  Data         {data_dir}\n\n"
            f"  Ctrl-C to stop.\n"
            f"{rule}",
            self.style.SUCCESS,
        )
