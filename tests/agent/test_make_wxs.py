"""The MSI's WiX source (packaging/windows/make_wxs.py): the REMOVE_STATE uninstall property.

The .wxs is checked as XML everywhere; where msitools' wixl is installed (bin/test-windows and
build-msi install it, CI too), the MSI it builds is opened with msiinfo and its CustomAction and
InstallExecuteSequence rows are checked as Windows Installer will read them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NS = {"w": "http://schemas.microsoft.com/wix/2006/wi"}
spec = importlib.util.spec_from_file_location("make_wxs", ROOT / "packaging/windows/make_wxs.py")
assert spec and spec.loader
make_wxs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_wxs)


@pytest.fixture
def stage(tmp_path):
    stage = tmp_path / "stage"
    (stage / "python").mkdir(parents=True)
    (stage / "python" / "python.exe").write_bytes(b"MZ not really")
    (stage / "caisey-agent.cmd").write_text("@echo off\r\n")
    return stage


@pytest.fixture
def wxs(stage, tmp_path):
    out = tmp_path / "caisey-agent.wxs"
    make_wxs.main(stage, "1.2.3", out)
    return out


def test_remove_state_is_a_deferred_system_action_on_uninstall_only(wxs):
    product = ET.parse(wxs).getroot().find("w:Product", NS)
    actions = {a.get("Id"): a.attrib for a in product.findall("w:CustomAction", NS)}
    assert actions["SetCaiseyCmd"] == {
        "Id": "SetCaiseyCmd",
        "Property": "CaiseyCmd",
        "Value": "[System64Folder]cmd.exe",
        "Impersonate": "yes",
    }
    remove = actions["RemoveState"]
    assert remove["Property"] == "CaiseyCmd"
    assert remove["ExeCommand"] == '/d /c rmdir /s /q "[CommonAppDataFolder]Caisey"'
    # deferred, as LocalSystem, and a failure does not roll the uninstall back
    assert (remove["Execute"], remove["Impersonate"], remove["Return"]) == ("deferred", "no", "ignore")
    # The folder it deletes is the state folder the MSI creates (STATEDIR under CommonAppDataFolder).
    state_dir = product.find(".//w:Directory[@Id='CommonAppDataFolder']/w:Directory[@Id='STATEDIR']", NS)
    assert state_dir is not None and state_dir.get("Name") == "Caisey"

    sequence = {c.get("Action"): c for c in product.findall("w:InstallExecuteSequence/w:Custom", NS)}
    condition = sequence["RemoveState"].text
    # only a full removal, only when asked, never the older version's removal during an upgrade
    assert condition == 'REMOVE~="ALL" AND REMOVE_STATE="1" AND NOT UPGRADINGPRODUCTCODE'
    # After RemoveFolders (3600: service stopped at 1900, files removed at 3500), before CreateFolders.
    assert 3600 < int(sequence["RemoveState"].get("Sequence")) < 3700
    # The path is set (immediate) after CostFinalize (1000), long before the script is written (1500).
    assert 1000 < int(sequence["SetCaiseyCmd"].get("Sequence")) < 1500
    rep = product.find("w:InstallExecuteSequence/w:RemoveExistingProducts", NS)
    assert rep.get("Sequence") == "1401"


def test_the_other_properties_and_the_service_are_unchanged(wxs):
    text = wxs.read_text()
    for prop, name in make_wxs.PROPERTIES:
        assert f'Name="{name}" Type="string" Value="[{prop}]"' in text
    assert '<ServiceInstall Id="CaiseyAgentService" Name="CaiseyAgent"' in text
    assert 'Remove="uninstall"' in text


WIXL, MSIINFO = shutil.which("wixl"), shutil.which("msiinfo")


def msi_table(msi: Path, table: str) -> list[list[str]]:
    out = subprocess.run([MSIINFO, "export", str(msi), table], check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines()[3:]]  # after the header, types and key rows


def test_the_built_msi_has_the_rows_windows_installer_runs(wxs, stage, tmp_path):
    if not (WIXL and MSIINFO):
        if os.environ.get("CI"):
            pytest.fail("wixl/msiinfo are not installed (apt-get install wixl msitools); CI installs them")
        pytest.skip("wixl/msiinfo are not installed (apt-get install wixl msitools)")
    msi = tmp_path / "caisey-agent.msi"
    built = subprocess.run(
        [WIXL, "-a", "x64", "-o", str(msi), str(wxs)], cwd=stage, capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0 and msi.exists(), built.stderr
    actions = {row[0]: row[1:4] for row in msi_table(msi, "CustomAction")}
    # 50 (exe named by a property) + 0x40 (ignore return) + 0x400 (deferred) + 0x800 (no impersonation)
    assert actions["RemoveState"] == [str(50 + 0x40 + 0x400 + 0x800), "CaiseyCmd", make_wxs.REMOVE_STATE_COMMAND]
    assert actions["SetCaiseyCmd"] == ["51", "CaiseyCmd", "[System64Folder]cmd.exe"]  # 51: set a property
    rows = {row[0]: (row[1], int(row[2])) for row in msi_table(msi, "InstallExecuteSequence")}
    assert rows["RemoveState"] == (make_wxs.REMOVE_STATE_CONDITION, 3650)
    order = sorted(rows, key=lambda name: rows[name][1])
    assert (
        order.index("CostFinalize")
        < order.index("SetCaiseyCmd")
        < order.index("InstallValidate")
        < order.index("RemoveExistingProducts")
        < order.index("InstallInitialize")
        < order.index("StopServices")
        < order.index("RemoveFiles")
        < order.index("RemoveFolders")
        < order.index("RemoveState")
        < order.index("InstallFinalize")
    )


def test_the_built_msi_writes_an_explicit_local_policy(wxs, stage, tmp_path):
    """ALLOW_SHELL (issue 13): the MSI runs `caisey-agent policy --msi-allow-shell=[ALLOW_SHELL]` with
    the installed python.exe, as LocalSystem, before the service starts; a bad value stops the install
    before anything changes. The policy code itself: tests/agent/test_policy.py."""
    if not (WIXL and MSIINFO):
        if os.environ.get("CI"):
            pytest.fail("wixl/msiinfo are not installed (apt-get install wixl msitools); CI installs them")
        pytest.skip("wixl/msiinfo are not installed (apt-get install wixl msitools)")
    msi = tmp_path / "caisey-agent.msi"
    built = subprocess.run(
        [WIXL, "-a", "x64", "-o", str(msi), str(wxs)], cwd=stage, capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0, built.stderr
    actions = {row[0]: row[1:4] for row in msi_table(msi, "CustomAction")}
    python_file = make_wxs.ident("f", "python/python.exe")
    # 18 (exe from an installed File) + 0x400 (deferred) + 0x800 (no impersonation: LocalSystem);
    # no 0x40: its exit status is checked, a failure rolls the install back.
    assert actions["WritePolicy"] == [str(18 + 0x400 + 0x800), python_file, make_wxs.WRITE_POLICY_COMMAND]
    assert make_wxs.WRITE_POLICY_COMMAND == (
        '-B -m caisey_agent policy --state-dir "[CommonAppDataFolder]Caisey" "--msi-allow-shell=[ALLOW_SHELL]"'
    )
    files = {row[0]: row[2] for row in msi_table(msi, "File")}
    assert files[python_file] == "python.exe"
    rows = {row[0]: (row[1], int(row[2])) for row in msi_table(msi, "InstallExecuteSequence")}
    assert rows["WritePolicy"][0] == 'NOT REMOVE~="ALL"'  # install, upgrade, repair; not the uninstall
    order = sorted(rows, key=lambda name: rows[name][1])
    assert (
        order.index("CreateFolders")
        < order.index("InstallFiles")
        < order.index("InstallServices")
        < order.index("WritePolicy")
        < order.index("StartServices")
        < order.index("InstallFinalize")
    )
    launch = dict(msi_table(msi, "LaunchCondition"))
    assert launch[make_wxs.ALLOW_SHELL_CONDITION] == make_wxs.ALLOW_SHELL_MESSAGE
    assert "ALLOW_SHELL" not in dict(msi_table(msi, "Property"))  # no default: an upgrade keeps the file


def test_the_built_msi_ends_the_prompt_helpers_before_it_removes_the_files(wxs, stage, tmp_path):
    """Files in use (issue 13): on uninstall, repair, and this version's removal by a later upgrade,
    `caisey-agent desktop-helper --close-all` runs as LocalSystem after the service stopped (which told
    the helpers it reaches to exit) and before the files go. The process matching:
    tests/agent/test_desktop_channel.py."""
    if not (WIXL and MSIINFO):
        if os.environ.get("CI"):
            pytest.fail("wixl/msiinfo are not installed (apt-get install wixl msitools); CI installs them")
        pytest.skip("wixl/msiinfo are not installed (apt-get install wixl msitools)")
    msi = tmp_path / "caisey-agent.msi"
    built = subprocess.run(
        [WIXL, "-a", "x64", "-o", str(msi), str(wxs)], cwd=stage, capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0, built.stderr
    actions = {row[0]: row[1:4] for row in msi_table(msi, "CustomAction")}
    # 18 (exe from an installed File) + 0x40 (exit status ignored) + 0x400 (deferred) + 0x800 (LocalSystem)
    assert actions["CloseHelpers"] == [
        str(18 + 0x40 + 0x400 + 0x800),
        make_wxs.ident("f", "python/python.exe"),
        "-B -m caisey_agent desktop-helper --close-all",
    ]
    rows = {row[0]: (row[1], int(row[2])) for row in msi_table(msi, "InstallExecuteSequence")}
    assert rows["CloseHelpers"][0] == "Installed"  # not on a first install
    order = sorted(rows, key=lambda name: rows[name][1])
    assert (
        order.index("InstallInitialize")
        < order.index("StopServices")
        < order.index("CloseHelpers")
        < order.index("RemoveFiles")
        < order.index("InstallFiles")
    )


def test_the_built_msi_starts_the_prompt_helper_at_every_logon(wxs, stage, tmp_path):
    """HKLM Run, 64-bit view: every user's logon starts `pythonw.exe -m caisey_agent desktop-helper`,
    the same command the service uses (without --session); removed with the program."""
    from caisey_agent import desktop

    if not (WIXL and MSIINFO):
        if os.environ.get("CI"):
            pytest.fail("wixl/msiinfo are not installed (apt-get install wixl msitools); CI installs them")
        pytest.skip("wixl/msiinfo are not installed (apt-get install wixl msitools)")
    msi = tmp_path / "caisey-agent.msi"
    subprocess.run([WIXL, "-a", "x64", "-o", str(msi), str(wxs)], cwd=stage, check=True, capture_output=True)
    rows = [r for r in msi_table(msi, "Registry") if r[3] == "CaiseyPrompts"]
    assert len(rows) == 1
    _, root, key, _, value, component = rows[0]
    assert (root, key) == ("2", r"SOFTWARE\Microsoft\Windows\CurrentVersion\Run")  # 2: HKLM, every user
    assert value == '"[INSTALLDIR]python\\pythonw.exe" -B -m caisey_agent desktop-helper'
    installed = value.replace("[INSTALLDIR]", "C:\\Program Files\\Caisey\\")
    assert installed == desktop.helper_command(r"C:\Program Files\Caisey\python\python.exe")
    attributes = {r[0]: int(r[3]) for r in msi_table(msi, "Component")}
    assert attributes[component] & 256  # msidbComponentAttributes64bit: the 64-bit registry view
    assert component in {r[1] for r in msi_table(msi, "FeatureComponents")}


def test_no_policy_action_without_python(tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "caisey-agent.cmd").write_text("@echo off\r\n")
    make_wxs.main(stage, "1.0.0", tmp_path / "x.wxs")
    assert "WritePolicy" not in (tmp_path / "x.wxs").read_text()


WINE, WINESERVER = shutil.which("wine"), shutil.which("wineserver")


def test_remove_state_under_wines_msiexec(tmp_path):
    """The property end to end under Wine's msiexec (a fresh prefix; an MSI without the service,
    whose ServiceInstall needs the real embeddable CPython: bin/test-windows covers that one).
    Uninstall keeps the state folder; an upgrade given REMOVE_STATE=1 keeps it (the older version's
    removal is not the uninstall it means); an uninstall with REMOVE_STATE=1 deletes it."""
    if not (WINE and WINESERVER and WIXL):
        pytest.skip("needs wine and wixl (apt-get install wine wine64 wixl; bin/test-windows installs them)")
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "caisey-agent.cmd").write_text("@echo off\r\n")
    msis = {}
    for version in ("1.0.0", "1.0.1"):
        wxs, msis[version] = tmp_path / f"{version}.wxs", tmp_path / f"caisey-agent-{version}.msi"
        make_wxs.main(stage, version, wxs)
        subprocess.run(
            [WIXL, "-a", "x64", "-o", str(msis[version]), str(wxs)], cwd=stage, check=True, capture_output=True
        )
    prefix = tmp_path / "prefix"
    env = {**os.environ, "WINEPREFIX": str(prefix), "WINEARCH": "win64", "WINEDEBUG": "-all", "DISPLAY": ""}
    state = prefix / "drive_c" / "ProgramData" / "Caisey"
    program = prefix / "drive_c" / "Program Files" / "Caisey"

    def wine(*args: str) -> None:
        # Output piped, never redirected to a file (Wine's Windows programs fail on that).
        done = subprocess.run([WINE, *args], env=env, capture_output=True, timeout=300)
        subprocess.run([WINESERVER, "-w"], env=env, timeout=300)
        assert done.returncode == 0, (args, done.stderr[-2000:])

    def leave_state() -> None:
        (state / "logs").mkdir(parents=True, exist_ok=True)
        (state / "agent.sqlite3").write_bytes(b"identity")
        (state / "logs" / "agent.log").write_text("log")

    try:
        subprocess.run([WINE, "wineboot", "-i"], env=env, capture_output=True, timeout=300)
        subprocess.run([WINESERVER, "-w"], env=env, timeout=300)
        wine("msiexec", "/i", str(msis["1.0.0"]), "/qn")
        assert (program / "caisey-agent.cmd").exists() and state.is_dir()
        leave_state()
        wine("msiexec", "/x", str(msis["1.0.0"]), "/qn")
        assert not program.exists()
        assert (state / "agent.sqlite3").read_bytes() == b"identity"  # kept unless asked

        wine("msiexec", "/i", str(msis["1.0.0"]), "/qn")
        wine("msiexec", "/i", str(msis["1.0.1"]), "/qn", "REMOVE_STATE=1")  # an upgrade
        assert (state / "agent.sqlite3").read_bytes() == b"identity"
        assert (state / "logs" / "agent.log").exists()

        wine("msiexec", "/x", str(msis["1.0.1"]), "/qn", "REMOVE_STATE=1")
        assert not state.exists() and not program.exists()
    finally:
        subprocess.run([WINESERVER, "-k"], env=env, capture_output=True, timeout=60)
