"""axe-core, the accessibility engine (Deque's, from the npm registry), for the browser tests.

``install()`` puts the version pinned in tests/browser/axe/package-lock.json (with its sha512
integrity, which npm checks) into a cache folder outside the repository ($CAISEY_TEST_CACHE or
~/.cache/caisey; nothing under node_modules is committed), once, with ``npm ci``. ``run()``
injects axe.min.js into a loaded page and returns what axe found.

The script is injected through the DevTools protocol (Playwright's ``evaluate``), which the
page's Content-Security-Policy does not govern: the page is checked under its real policy, with
no ``bypass_csp``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent / "axe"
PACKAGE = HERE / "package.json"
LOCK = HERE / "package-lock.json"
FAILING_IMPACTS = ("serious", "critical")


class Unavailable(Exception):
    """Node.js or npm is missing, or axe-core could not be installed."""


def cache_dir() -> Path:
    root = Path(os.environ.get("CAISEY_TEST_CACHE") or Path.home() / ".cache" / "caisey")
    digest = hashlib.sha256(PACKAGE.read_bytes() + LOCK.read_bytes()).hexdigest()[:12]
    return root / f"axe-core-{digest}"


def script_path(folder: Path) -> Path:
    return folder / "node_modules" / "axe-core" / "axe.min.js"


def install() -> Path:
    """The path of axe.min.js, installed from the lock file if it is not there yet."""
    folder = cache_dir()
    if script_path(folder).is_file():
        return script_path(folder)
    npm = shutil.which("npm")
    if npm is None:
        raise Unavailable("npm is needed to install axe-core for the accessibility checks (apt-get install npm)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Installed next to the cache folder, then moved into place: another test process never sees half.
    work = Path(tempfile.mkdtemp(prefix="axe-core-", dir=folder.parent))
    try:
        shutil.copyfile(PACKAGE, work / "package.json")
        shutil.copyfile(LOCK, work / "package-lock.json")
        # ci: exactly the lock file's version, its integrity checked; fails if they disagree.
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--omit=dev", "--ignore-scripts"],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            raise Unavailable(f"npm ci of axe-core failed:\n{result.stdout}{result.stderr}")
        if not script_path(work).is_file():
            raise Unavailable(f"npm ci ran but {script_path(work)} is missing")
        try:
            work.rename(folder)
        except OSError:  # another process got there first
            if not script_path(folder).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return script_path(folder)


@dataclass
class Finding:
    """One axe rule that failed on a page, with the nodes it failed on."""

    rule: str
    impact: str
    help: str
    help_url: str
    targets: list[str]
    summaries: list[str]
    width: str = ""  # the viewport it was found at (laptop, phone), where the caller says

    def describe(self, *, limit: int = 6) -> str:
        at = f" at {self.width} width" if self.width else ""
        lines = [f"  [{self.impact}] {self.rule}{at}: {self.help} ({self.help_url})"]
        for target, summary in list(zip(self.targets, self.summaries, strict=True))[:limit]:
            detail = " ".join(summary.split())[:300]
            lines.append(f"      at {target}" + (f": {detail}" if detail else ""))
        if len(self.targets) > limit:
            lines.append(f"      ... and {len(self.targets) - limit} more")
        return "\n".join(lines)


RUN = """async () => {
    const result = await window.axe.run(document, {resultTypes: ['violations']});
    return {
        version: window.axe.version,
        violations: result.violations.map(v => ({
            rule: v.id, impact: v.impact || 'minor', help: v.help, help_url: v.helpUrl,
            targets: v.nodes.map(n => n.target.map(t => Array.isArray(t) ? t.join(' >> ') : t).join(' ')),
            summaries: v.nodes.map(n => n.failureSummary || ''),
        })),
    };
}"""


def run(page, source: str, *, width: str = "") -> tuple[str, list[Finding]]:
    """Inject axe (once per document) and run every rule axe enables by default (WCAG 2.0-2.2 A
    and AA, and its best practices) on the whole page; axe's version and what failed."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(source)
    result = page.evaluate(RUN)
    return result["version"], [Finding(**v, width=width) for v in result["violations"]]


def failing(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.impact in FAILING_IMPACTS]


if __name__ == "__main__":  # .ci/run installs it in a phase of its own: python -m tests.browser.axe
    print(install())
