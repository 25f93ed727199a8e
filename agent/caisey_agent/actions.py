"""The action runner: ``action.run`` and ``action.cancel`` from the server.

For every ``action.run`` the agent

1. checks the request itself, never trusting the server: the kind must be in this
   agent's catalogue, the category must be the catalogue's, the parameters must
   pass :func:`protocol.validate_params`, and the endpoint's local policy
   (:mod:`caisey_agent.policy`) must allow it. Otherwise it answers
   ``action.result`` with status ``refused`` and a clear reason; nothing runs.
2. records the action as *running* in its SQLite file, then runs it off the event
   loop (a subprocess for ``shell``, a worker thread for the built-in diagnostics),
3. sends ``action.output`` seq 0 (stream ``status``, data ``started``), then the
   output in order (seq 1, 2, ...; stream ``stdout``/``stderr``/``meta``), in chunks
   of at most 16 KiB, small writes coalesced for up to 0.2 s,
4. sends ``action.result`` (succeeded, failed, timed_out or cancelled) with
   ``result = {"data": ..., "text": ..., "truncated": bool}``, and records it.

Every frame goes through ``agent.send_durable``: kept in the agent's outbox and
replayed until the server acknowledges it, so nothing is lost while disconnected.

An action never runs twice: the runner drops replayed events by envelope id, and
this module refuses a second ``action.run`` for an action id it has seen before
(whatever the envelope id). An action interrupted by an agent crash or restart is
reported as failed by :func:`recover_interrupted`; it is not run again.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import math
import os
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psutil

from caisey_agent import __version__, platforms
from caisey_agent import protocol as p
from caisey_agent.diagnostics import Cancelled, Context, NotAvailable, Outcome, kill_process_tree, registry
from caisey_agent.policy import LocalPolicy, load_policy

log = logging.getLogger("caisey_agent.actions")


# Identifies this agent process in the actions table: rows it started are not "interrupted".
RUN_TOKEN = uuid.uuid4().hex

CHUNK_BYTES = 16 * 1024
FLUSH_INTERVAL_S = 0.2
# An action.result must stay well under the bridge's frame limit (protocol.MAX_FRAME_BYTES).
RESULT_BUDGET_BYTES = 192 * 1024
KILL_GRACE_S = 2.0  # SIGTERM first; SIGKILL for what is left of the group after this
DRAIN_GRACE_S = 1.0  # after the shell exits, how long to wait for pipes held open by its background children
MAX_TIMEOUT_S = 24 * 3600
MAX_DIAGNOSTIC_THREADS = 8

INTERRUPTED_ERROR = "the agent stopped while this action was running; it was not re-run to avoid running it twice"
STOPPING_ERROR = "the agent was stopped while this action was running; it was stopped too and will not be re-run"
TRUNCATED_MARKER = "[output truncated: limit of {limit} bytes reached]"

_EXECUTOR = ThreadPoolExecutor(max_workers=MAX_DIAGNOSTIC_THREADS, thread_name_prefix="caisey-action")


# --- output --------------------------------------------------------------------------------


def clip_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding fits in ``max_bytes``."""
    if max_bytes <= 0:
        return ""
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode("utf-8", errors="ignore")


class OutputSink:
    """Ordered, coalesced, capped ``action.output`` frames for one action."""

    def __init__(self, agent: Any, action_id: str, limit: int) -> None:
        self.agent = agent
        self.action_id = action_id
        self.limit = max(0, int(limit))
        self.seq = 0
        self.accepted = 0  # stdout/stderr bytes accepted toward the limit
        self.discarded = 0  # bytes dropped past the limit
        self.truncated = False
        self._pending: list[list[str]] = []  # [stream, text] segments, adjacent same-stream merged
        self._pending_bytes = 0
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._ticker: asyncio.Task | None = None

    async def started(self) -> None:
        await self._send("status", "started")
        self._ticker = asyncio.create_task(self._tick())

    async def write(self, stream: str, text: str) -> None:
        if not text:
            return
        size = len(text.encode("utf-8"))
        if self.truncated:
            self.discarded += size
            return
        room = self.limit - self.accepted
        if size > room:
            head = clip_utf8(text, room)
            head_size = len(head.encode("utf-8"))
            self._append(stream, head)
            self.accepted += head_size
            self.discarded += size - head_size
            self.truncated = True
            self._append("meta", TRUNCATED_MARKER.format(limit=self.limit))
            await self.flush()
            return
        self._append(stream, text)
        self.accepted += size
        if self._pending_bytes >= CHUNK_BYTES or len(self._pending) > 1:
            await self.flush(complete_only=True)

    def _append(self, stream: str, text: str) -> None:
        if not text:
            return
        if self._pending and self._pending[-1][0] == stream and stream != "meta":
            self._pending[-1][1] += text
        else:
            self._pending.append([stream, text])
        self._pending_bytes += len(text.encode("utf-8"))

    async def flush(self, *, complete_only: bool = False) -> None:
        """Send what is pending. ``complete_only``: only full chunks and segments another stream has closed."""
        async with self._lock:
            while self._pending:
                stream, text = self._pending[0]
                size = len(text.encode("utf-8"))
                last = len(self._pending) == 1
                if size > CHUNK_BYTES:
                    piece = clip_utf8(text, CHUNK_BYTES)
                    self._pending[0][1] = text[len(piece) :]
                elif complete_only and last and size < CHUNK_BYTES:
                    break
                else:
                    piece = text
                    self._pending.pop(0)
                self._pending_bytes -= len(piece.encode("utf-8"))
                await self._send(stream, piece)

    async def _send(self, stream: str, data: str) -> None:
        seq = self.seq
        self.seq += 1
        await self.agent.send_durable(p.ActionOutput(action_id=self.action_id, seq=seq, stream=stream, data=data))

    async def _tick(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=FLUSH_INTERVAL_S)
            except TimeoutError:
                pass
            await self.flush()

    async def close(self) -> None:
        self._stop.set()
        ticker = self._ticker
        if ticker is not None:
            # asyncio.wait, not await: the flusher may have been cancelled (agent stopping) and that must
            # not stop the final flush and the result.
            await asyncio.wait([ticker])
            if not ticker.cancelled() and ticker.exception() is not None:
                log.error("output flusher for %s failed: %r", self.action_id, ticker.exception())
        await self.flush()


# --- results -----------------------------------------------------------------------------------


def _encoded_size(value: Any) -> int:
    return len(msgspec.json.encode(value))


def _largest_list(node: Any, path: tuple = ()) -> tuple[tuple, int] | None:
    best: tuple[tuple, int] | None = None
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    if isinstance(node, list) and len(node) > 1:
        best = (path, _encoded_size(node))
    for key, child in items:
        if isinstance(child, (dict, list)):
            found = _largest_list(child, path + (key,))
            if found and (best is None or found[1] > best[1]):
                best = found
    return best


def fit_result(result: dict, budget: int = RESULT_BUDGET_BYTES) -> dict:
    """Shrink a result to fit in one frame: trim the biggest lists in data, then the text."""
    if _encoded_size(result) <= budget:
        return result
    result["truncated"] = True
    result["result_clipped"] = True
    for _ in range(64):
        if _encoded_size(result) <= budget:
            return result
        found = _largest_list(result.get("data"))
        if found is None:
            break
        path, _ = found
        parent = result["data"]
        for key in path[:-1]:
            parent = parent[key]
        items = parent[path[-1]] if path else result["data"]
        keep = len(items) // 2
        # Lines of a file or log: the latest matter most; elsewhere the first (sorted) items do.
        trimmed = items[len(items) - keep :] if path and path[-1] in ("lines",) else items[:keep]
        if path:
            parent[path[-1]] = trimmed
        else:
            result["data"] = trimmed
    size = _encoded_size(result)
    if size > budget:
        text = result.get("text", "")
        room = max(0, len(text.encode("utf-8")) - (size - budget) - 256)
        result["text"] = clip_utf8(text, room) + "\n[text clipped to fit in one message]"
    if _encoded_size(result) > budget:
        result["data"] = {"error": "the result was too large to send", "size_bytes": size}
    return result


@dataclass
class Finished:
    status: str
    exit_code: int | None = None
    error: str = ""
    data: dict = field(default_factory=dict)
    text: str = ""


# --- the runner --------------------------------------------------------------------------------


@dataclass
class RunningAction:
    action_id: str
    kind: str
    started_at: float
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    diag: Context | None = None
    pid: int | None = None


class ActionManager:
    """The actions running in this agent process."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.running: dict[str, RunningAction] = {}

    # --- entry points -----------------------------------------------------------------

    async def run(self, body: p.ActionRun) -> None:
        state = self.agent.state
        aid = body.action_id
        if aid in self.running:
            log.warning("action %s is already running; duplicate action.run ignored", aid)
            return
        known = state.action_get(aid)
        if known is not None:
            if known["status"] == "cancel_requested":
                now = time.time()
                log.info("action %s was cancelled before it arrived; not running it", aid)
                await self.agent.send_durable(
                    p.ActionResult(
                        action_id=aid, status="cancelled", error="cancelled before it started", finished_at=now
                    )
                )
                state.action_claim_cancelled(aid, body.kind, now)
            else:
                log.warning("action %s was already %s on this endpoint; not running it again", aid, known["status"])
            return
        policy = load_policy(state.dir)
        refusal, params = check_request(body, policy)
        if refusal:
            now = time.time()
            log.warning("refusing action %s (%s): %s", aid, body.kind, refusal)
            await self.agent.send_durable(
                p.ActionResult(action_id=aid, status="refused", error=refusal, finished_at=now)
            )
            state.action_finish(aid, "refused", finished_at=now, error=refusal, kind=body.kind)
            return
        started = time.time()
        if not state.action_begin(aid, body.kind, RUN_TOKEN, started):
            log.warning("action %s was recorded meanwhile; not running it twice", aid)
            return
        ra = RunningAction(action_id=aid, kind=body.kind, started_at=started)
        self.running[aid] = ra
        ra.task = asyncio.create_task(self._execute(ra, body, params, policy), name=f"action-{aid}")
        log.info("action %s (%s) started", aid, body.kind)

    def cancel(self, action_id: str) -> bool:
        ra = self.running.get(action_id)
        if ra is None:
            known = self.agent.state.action_get(action_id)
            if known is None:
                self.agent.state.action_cancel_requested(action_id)
                log.info(
                    "cancel for unknown action %s: remembered, so a late action.run for it will not run", action_id
                )
            else:
                log.info("cancel for action %s ignored: it is already %s", action_id, known["status"])
            return False
        log.info("cancelling action %s (%s)", action_id, ra.kind)
        ra.cancel_event.set()
        if ra.diag is not None:
            ra.diag.cancel()
        return True

    async def wait_idle(self, timeout: float | None = None) -> None:
        tasks = [ra.task for ra in self.running.values() if ra.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    # --- running --------------------------------------------------------------------------

    async def _execute(self, ra: RunningAction, body: p.ActionRun, params: dict, policy: LocalPolicy) -> None:
        sink = OutputSink(self.agent, ra.action_id, body.output_limit)
        timeout = effective_timeout(body)
        try:
            await sink.started()
            if ra.kind == "shell":
                fin = await self._run_shell(ra, params["command"], sink, timeout, shell=params.get("shell", ""))
            else:
                fin = await self._run_diagnostic(ra, params, policy, sink, timeout)
        except asyncio.CancelledError:
            # The agent itself is stopping: stop the action too and say so, then let the stop proceed.
            self._kill(ra)
            fin = Finished("failed", error=STOPPING_ERROR)
            try:
                await self._report(ra, sink, fin, timeout)
            finally:
                self.running.pop(ra.action_id, None)
            raise
        except Exception as exc:  # noqa: BLE001 - an action never takes the agent down
            log.exception("action %s (%s) crashed", ra.action_id, ra.kind)
            self._kill(ra)
            fin = Finished("failed", error=f"internal error in the agent: {type(exc).__name__}: {exc}")
        try:
            await self._report(ra, sink, fin, timeout)
        finally:
            self.running.pop(ra.action_id, None)

    async def _report(self, ra: RunningAction, sink: OutputSink, fin: Finished, timeout: float) -> None:
        await sink.close()
        finished = time.time()
        text = fin.text
        text_truncated = False
        if len(text.encode("utf-8")) > sink.limit:
            text = clip_utf8(text, sink.limit) + "\n" + TRUNCATED_MARKER.format(limit=sink.limit)
            text_truncated = True
        result = fit_result({"data": fin.data, "text": text, "truncated": sink.truncated or text_truncated})
        if sink.truncated:
            result["discarded_bytes"] = sink.discarded
        error = fin.error
        if fin.status == "timed_out" and not error:
            error = f"timed out after {timeout:g} s"
        elif fin.status == "cancelled" and not error:
            error = "cancelled"
        await self.agent.send_durable(
            p.ActionResult(
                action_id=ra.action_id,
                status=fin.status,
                exit_code=fin.exit_code,
                result=result,
                error=error,
                started_at=ra.started_at,
                finished_at=finished,
            )
        )
        self.agent.state.action_finish(ra.action_id, fin.status, finished_at=finished, error=error, kind=ra.kind)
        log.info("action %s (%s) %s%s", ra.action_id, ra.kind, fin.status, f": {error}" if error else "")

    def _kill(self, ra: RunningAction) -> None:
        ra.cancel_event.set()
        if ra.diag is not None:
            ra.diag.cancel()
        if ra.pid is not None:
            kill_process_tree(ra.pid)

    # --- diagnostics ------------------------------------------------------------------------

    async def _run_diagnostic(
        self, ra: RunningAction, params: dict, policy: LocalPolicy, sink: OutputSink, timeout: float
    ) -> Finished:
        fn = registry()[ra.kind]
        ctx = Context(params=params, policy=policy, deadline=time.monotonic() + timeout)
        ra.diag = ctx
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(_EXECUTOR, fn, ctx)
        cancelled = asyncio.create_task(ra.cancel_event.wait())
        try:
            done, _ = await asyncio.wait({future, cancelled}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
        if future not in done or ra.cancel_event.is_set():
            ctx.cancel()  # kills its subprocesses; the thread ends on its own and its outcome is dropped
            future.add_done_callback(_discard_outcome)
            if ra.cancel_event.is_set():
                return Finished("cancelled", error="cancelled by the technician")
            return Finished("timed_out")
        try:
            outcome: Outcome = future.result()
        except Cancelled:
            return Finished("cancelled" if ra.cancel_event.is_set() else "timed_out")
        except NotAvailable as exc:
            await sink.write("stderr", f"{exc}\n")
            return Finished("failed", error=str(exc), text=str(exc), data={"available": False, "reason": str(exc)})
        except (ValueError, RuntimeError, TimeoutError, OSError) as exc:
            message = str(exc) or type(exc).__name__
            await sink.write("stderr", f"{message}\n")
            return Finished("failed", error=message, text=message, data={"error": message})
        if outcome.text:
            await sink.write("stdout", outcome.text if outcome.text.endswith("\n") else outcome.text + "\n")
        return Finished(
            "succeeded" if outcome.ok else "failed",
            exit_code=outcome.exit_code,
            error="" if outcome.ok else (outcome.error or "the check failed"),
            data=outcome.data,
            text=outcome.text,
        )

    # --- shell --------------------------------------------------------------------------------

    async def _run_shell(
        self, ra: RunningAction, command: str, sink: OutputSink, timeout: float, *, shell: str = ""
    ) -> Finished:
        shell = shell or default_shell()
        began = time.monotonic()
        # The command may name its own action (for logs or idempotency keys of its own).
        env = {**os.environ, "CAISEY_ACTION_ID": ra.action_id}
        marker = ""
        try:
            if shell == "sh":
                argv = ["/bin/sh", "-c", command]
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                    start_new_session=True,
                )
            else:
                from caisey_agent.diagnostics import windows

                kwargs = windows.shell_popen_kwargs() if platforms.is_windows() else {"start_new_session": True}
                if shell == "cmd":
                    # %ComSpec% /c "command": cmd's own quoting rules, not argv quoting.
                    argv = [os.environ.get("ComSpec", "cmd.exe"), "/c", command]
                    proc = await asyncio.create_subprocess_shell(
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        env=env,
                        **kwargs,
                    )
                else:
                    marker = _marker_path(ra.action_id)
                    argv = windows.shell_argv(command, "powershell", marker=marker)
                    proc = await asyncio.create_subprocess_exec(
                        *argv,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        env=env,
                        **kwargs,
                    )
        except OSError as exc:
            message = f"cannot start the shell {shell}: {exc.strerror or exc}"
            return Finished("failed", error=message, text=message, data={"command": command, "shell": shell})
        ra.pid = proc.pid
        self.agent.state.action_set_process(ra.action_id, proc.pid, _create_time(proc.pid))
        counts = {"stdout": 0, "stderr": 0}

        async def pump(stream: asyncio.StreamReader, name: str) -> None:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            while True:
                chunk = await stream.read(65536)
                if not chunk:
                    break
                counts[name] += len(chunk)
                await sink.write(name, decoder.decode(chunk))
            await sink.write(name, decoder.decode(b"", final=True))

        readers = [asyncio.create_task(pump(proc.stdout, "stdout")), asyncio.create_task(pump(proc.stderr, "stderr"))]
        exited = asyncio.create_task(proc.wait())
        cancelled = asyncio.create_task(ra.cancel_event.wait())
        ending = None
        try:
            done, _ = await asyncio.wait({exited, cancelled}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if exited not in done:
                ending = "cancelled" if cancelled in done else "timed_out"
                await self._terminate(proc)
            await exited
            _, slow = await asyncio.wait(readers, timeout=DRAIN_GRACE_S)
            for reader in slow:  # a background child keeps the pipe open: stop reading, it is not ours to wait for
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
        except asyncio.CancelledError:
            kill_process_tree(proc.pid)
            for task in (*readers, exited):
                task.cancel()
            raise
        finally:
            cancelled.cancel()
            transport = getattr(proc, "_transport", None)
            if transport is not None:
                transport.close()
        rc = proc.returncode
        duration = round(time.monotonic() - began, 3)
        ran = _marker_seen(marker) if marker else True
        data = {
            "command": command,
            "shell": shell,
            "shell_program": argv[0],
            "exit_code": rc,
            "signal": _signal_name(-rc) if rc is not None and rc < 0 else None,
            "duration_s": duration,
            "stdout_bytes": counts["stdout"],
            "stderr_bytes": counts["stderr"],
            "pid": proc.pid,
        }
        if ending == "timed_out":
            return Finished(
                "timed_out",
                exit_code=rc,
                data=data,
                text=f"Timed out after {timeout:g} s; the command and its process group were killed.",
                error=f"timed out after {timeout:g} s; the command was killed",
            )
        if ending == "cancelled":
            return Finished(
                "cancelled",
                exit_code=rc,
                data=data,
                text="Cancelled; the command and its process group were killed.",
                error="cancelled by the technician; the command was killed",
            )
        summary = (
            f"exit code {rc} after {duration:g} s; {counts['stdout']} bytes on stdout, "
            f"{counts['stderr']} bytes on stderr"
        )
        if not ran:
            # Wine's powershell.exe (and any broken install) exits 0 without running anything.
            return Finished(
                "failed",
                exit_code=rc,
                data={**data, "shell_ran_command": False},
                text=summary,
                error=f"PowerShell exited {rc} without running the command (an empty answer is not a result); "
                "try shell=cmd or check the PowerShell installation",
            )
        if rc == 0:
            return Finished("succeeded", exit_code=0, data=data, text=summary)
        why = f"killed by signal {data['signal']}" if data["signal"] else f"exit code {rc}"
        return Finished("failed", exit_code=rc, data=data, text=summary, error=f"the command failed: {why}")

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        """Stop the shell and everything in its process group: SIGTERM, then SIGKILL after a grace period."""
        if platforms.is_windows():
            kill_process_tree(proc.pid)
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + KILL_GRACE_S
        while time.monotonic() < deadline:
            if proc.returncode is not None and not _group_alive(proc.pid):
                return
            await asyncio.sleep(0.05)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def default_shell() -> str:
    return "powershell" if platforms.is_windows() else "sh"


def shell_refusal(shell: str) -> str:
    """Why this endpoint cannot run the shell a technician chose, or ""."""
    if not shell:
        return ""
    if platforms.is_windows():
        if shell == "sh":
            return "shell 'sh' is not available on this Windows endpoint: choose powershell or cmd"
        return ""
    if shell == "cmd":
        return "shell 'cmd' is only available on Windows endpoints; this one runs /bin/sh"
    if shell == "powershell":
        return "shell 'powershell' is only available on Windows endpoints; this one runs /bin/sh"
    return ""


def _marker_path(action_id: str) -> str:
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"caisey-ps-{action_id}-{uuid.uuid4().hex[:8]}.started")


def _marker_seen(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    except OSError:
        return True  # there but not removable: PowerShell did write it


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def _stop_leftover(row: dict) -> bool:
    """Kill the process group an interrupted action left running, if it is still the same process."""
    pid, created = row.get("pid"), row.get("pid_created_at")
    if not pid or created is None:
        return False
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - created) > 0.05 or proc.status() == psutil.STATUS_ZOMBIE:
            return False  # gone, or the pid now belongs to another process
    except (psutil.Error, OSError):
        return False
    kill_process_tree(pid)
    return True


def _discard_outcome(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so asyncio does not log it


def effective_timeout(body: p.ActionRun) -> float:
    timeout = body.timeout
    if not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        kind = p.ACTION_KINDS.get(body.kind)
        timeout = kind.default_timeout if kind else 60.0
    return float(min(timeout, MAX_TIMEOUT_S))


def check_request(body: p.ActionRun, policy: LocalPolicy) -> tuple[str, dict]:
    """(refusal reason or "", clean params). The agent's own checks; the server's are not trusted."""
    kind = p.ACTION_KINDS.get(body.kind)
    if kind is None:
        return f"unknown action kind {body.kind!r}: this agent (version {__version__}) does not know it", {}
    if body.category != kind.category:
        return (
            f"category mismatch: the request says {body.category!r} but {body.kind!r} is a "
            f"{kind.category} action on this agent"
        ), {}
    try:
        params = p.validate_params(body.kind, body.params)
    except p.ProtocolError as exc:
        return f"invalid parameters: {exc.detail}", {}
    refusal = policy.refusal(body.kind, kind.category)
    if refusal:
        return refusal, {}
    if body.kind == "shell":
        refusal = shell_refusal(params.get("shell", ""))
        if refusal:
            return refusal, {}
    if body.kind == "file_tail":
        allowed, resolved = policy.tail_path_allowed(params["path"])
        if not allowed:
            patterns = ", ".join(policy.allowed_tail_paths) or "none"
            why = f" (lockdown: {policy.problem})" if policy.lockdown else ""
            return (
                f"the endpoint's local policy does not allow reading {resolved}: it matches none of the "
                f"allowed_tail_paths ({patterns}){why}"
            ), {}
    return "", params


# --- the agent's view ---------------------------------------------------------------------------


def manager(agent: Any) -> ActionManager:
    """The ActionManager of this agent (one per Agent object)."""
    mgr = getattr(agent, "_caisey_actions", None)
    if mgr is None:
        mgr = ActionManager(agent)
        agent._caisey_actions = mgr
    return mgr


async def handle_action_run(agent: Any, env: p.Envelope) -> None:
    """Handler for ``action.run``: returns at once; the action runs in its own task."""
    try:
        await manager(agent).run(env.body)
    except Exception:  # noqa: BLE001 - the frame loop must go on
        log.exception("action.run %s could not be started", getattr(env.body, "action_id", "?"))


async def handle_action_cancel(agent: Any, env: p.Envelope) -> None:
    """Handler for ``action.cancel``: stops a running action; a no-op (logged) for unknown or finished ones."""
    manager(agent).cancel(env.body.action_id)


async def recover_interrupted(agent: Any) -> int:
    """Report actions a previous agent process left running as failed (never re-run them).

    Safe to call any number of times (e.g. after every handshake) and before a
    connection exists (the results wait in the outbox). Returns how many were reported.
    """
    mgr = manager(agent)
    state = agent.state
    reported = 0
    for row in state.actions_running(exclude_run_token=RUN_TOKEN):
        aid = row["action_id"]
        if aid in mgr.running:
            continue
        waiting = state.outbox_find_result(aid)
        if waiting is not None:
            # It finished and its result is still waiting for the server's ack: only the bookkeeping was lost.
            state.action_finish(
                aid,
                waiting.get("status", "failed"),
                finished_at=waiting.get("finished_at") or time.time(),
                error=waiting.get("error", ""),
                kind=row["kind"],
            )
            continue
        now = time.time()
        killed = _stop_leftover(row)
        log.warning(
            "action %s (%s) was interrupted by an agent stop; reporting it failed%s",
            aid,
            row["kind"],
            "; its leftover process group was killed" if killed else "",
        )
        text = INTERRUPTED_ERROR + (" Its command was still running and has been stopped." if killed else "")
        await agent.send_durable(
            p.ActionResult(
                action_id=aid,
                status="failed",
                error=INTERRUPTED_ERROR,
                started_at=row["started_at"],
                finished_at=now,
                result={
                    "data": {"interrupted": True, "leftover_process_killed": killed},
                    "text": text,
                    "truncated": False,
                },
            )
        )
        state.action_finish(aid, "failed", finished_at=now, error=INTERRUPTED_ERROR, kind=row["kind"])
        reported += 1
    state.prune_actions()
    return reported


async def stop_all(agent: Any, timeout: float = 5.0) -> None:
    """Optional, for a graceful shutdown: cancel the running actions' tasks and wait for their reports."""
    mgr = manager(agent)
    tasks = [ra.task for ra in mgr.running.values() if ra.task is not None]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
