"""First run from a fresh clone: `bin/demo` until its banner, with the local agent online.

For each installer asked for (uv, pip), with empty package caches (a temporary PIP_CACHE_DIR and
UV_CACHE_DIR) and no virtualenv active:

    git clone <this repository's HEAD> <tmp>/caisey && cd <tmp>/caisey && bin/demo

timed from the command to the banner (which `manage.py demo` prints once the local agent is
online), with each line of the demo's output time-stamped so the figure splits into phases
(virtualenv and install; migrations; server start; enrollment and agent; simulated fleet).
Then it is stopped (SIGTERM, which the demo takes as Ctrl-C). Stdlib only: run it with any Python 3.11+.

    python3 bench/first_run.py                      # uv, then pip
    python3 bench/first_run.py --installer uv --keep

Prints a table on stderr and, as the last line, one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BANNER = "Caisey is running."
# Lines of bin/bootstrap and `manage.py demo` that start a phase.
PHASES = [
    ("venv+install", "Creating virtualenv"),
    ("migrate", "Applying migrations"),
    ("server", "Starting the server"),
    ("agent", "nrolling the local agent"),
    ("fleet", "Starting the simulated fleet"),
    ("banner", BANNER),
]


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def clean_env(work: Path, installer: str) -> dict[str, str]:
    env = dict(os.environ)
    venv = env.pop("VIRTUAL_ENV", None)
    if venv:
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(venv))
    for name in ("CAISEY_DATA_DIR", "CAISEY_DATABASE_URL", "CAISEY_REDIS_URL", "DJANGO_SETTINGS_MODULE", "PYTHONPATH"):
        env.pop(name, None)
    env.update(
        PIP_CACHE_DIR=str(work / "pip-cache"),
        UV_CACHE_DIR=str(work / "uv-cache"),
        CAISEY_INSTALLER=installer,
        PYTHONUNBUFFERED="1",
    )
    return env


def one_run(installer: str, port: int, keep: bool, extra: list[str], timeout: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"caisey-first-run-{installer}-"))
    clone = work / "caisey"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = clean_env(work, installer)
    load_before = loadavg()
    lines: list[tuple[float, str]] = []
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["bin/demo", "--port", str(port), *extra],
        cwd=clone,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    banner = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append((time.monotonic() - t0, line.rstrip("\n")))
            if BANNER in line:
                banner.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while not banner.is_set() and proc.poll() is None and time.monotonic() - t0 < timeout:
        time.sleep(0.05)
    total = time.monotonic() - t0 if banner.is_set() else None
    load_after = loadavg()
    if proc.poll() is None:
        # SIGTERM, which the demo takes as Ctrl-C: started in the background, this script (and so
        # the demo) may have SIGINT ignored.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(timeout=5)
    starts: dict[str, float] = {}
    for at, line in lines:
        for name, marker in PHASES:
            if marker in line and name not in starts:
                starts[name] = at
    starts.setdefault("venv+install", 0.0)
    ordered = [(name, starts[name]) for name, _ in PHASES if name in starts]
    phases = {name: round(ordered[i + 1][1] - at, 1) for i, (name, at) in enumerate(ordered[:-1])}
    venv_mb = sum(f.stat().st_size for f in (clone / ".venv").rglob("*") if f.is_file()) / 1e6
    result = {
        "installer": installer,
        "to_banner_s": round(total, 1) if total is not None else None,
        "phases_s": phases,
        "venv_mb": round(venv_mb),
        "load_before": load_before,
        "load_after": load_after,
        "exit_status": proc.returncode,
    }
    if total is None:
        result["tail"] = [line for _, line in lines[-30:]]
    if keep:
        result["work"] = str(work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--installer", choices=["uv", "pip", "both"], default="both")
    parser.add_argument("--port", type=int, default=8700, help="first port the demo tries")
    parser.add_argument("--keep", action="store_true", help="keep the clone, its virtualenv and logs")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("demo_args", nargs="*", help="passed to bin/demo (after --), e.g. -- --no-sim-fleet")
    args = parser.parse_args()
    installers = ["uv", "pip"] if args.installer == "both" else [args.installer]
    results = []
    for installer in installers:
        print(f"first run with {installer} (empty caches) ...", file=sys.stderr)
        result = one_run(installer, args.port, args.keep, args.demo_args, args.timeout)
        results.append(result)
        phases = ", ".join(f"{k} {v:g}" for k, v in result["phases_s"].items())
        print(
            f"  {installer:<4} to banner {result['to_banner_s']} s ({phases}); venv {result['venv_mb']} MB; "
            f"load {result['load_before']} -> {result['load_after']}",
            file=sys.stderr,
        )
    print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": results}))
    return 0 if all(r["to_banner_s"] is not None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
