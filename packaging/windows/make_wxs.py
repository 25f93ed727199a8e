#!/usr/bin/env python3
"""Write the WiX source (for msitools' wixl) of the Caisey agent MSI from a staged folder.

Usage: make_wxs.py STAGE_DIR VERSION OUT.wxs

Sources are relative to STAGE_DIR: run wixl from there. STAGE_DIR holds what goes under "C:\\Program Files\\Caisey": python\\ (the embeddable CPython
with the agent and its dependencies in Lib\\site-packages) and caisey-agent.cmd. Every file
gets its own component with a GUID derived from its path (stable across builds, which is
what lets a major upgrade replace the files and keep the service's registration sane).
python.exe's component carries the ServiceInstall/ServiceControl: the service's program
is python.exe -B -m caisey_agent service run (-B: no .pyc files
written under Program Files, which an uninstall would leave behind).
"""

from __future__ import annotations

import hashlib
import sys
import uuid
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

# Fixed for the product's whole life: MSI upgrades find the installed product by it.
UPGRADE_CODE = "6C1B0E64-5C2B-4E8A-9A73-3B9E1D2C7A41"
NAMESPACE = uuid.UUID("0f0b6a1e-2d7c-4f5a-9a5e-7c3d1b2a9e10")
PROPERTIES = (
    ("SERVER_URL", "ServerUrl"),
    ("ENROLL_TOKEN", "EnrollToken"),
    ("CLIENT_GROUP", "ClientGroup"),
    ("CA_BUNDLE", "CaBundle"),
    ("SERVER_PIN", "ServerPin"),
)

# [CommonAppDataFolder] ends with a backslash: the folder's path is written without one.
REMOVE_STATE_COMMAND = '/d /c rmdir /s /q "[CommonAppDataFolder]Caisey"'
REMOVE_STATE_CONDITION = 'REMOVE~="ALL" AND REMOVE_STATE="1" AND NOT UPGRADINGPRODUCTCODE'

# ALLOW_SHELL=1 / ALLOW_SHELL=0: the local policy's "allow_shell" (caisey_agent/policy.py,
# apply_installer_choice). Not given: an existing policy.json is kept, and where there is none
# "allow_shell": false is written (no shell commands: the safe default). The installer always leaves
# an explicit policy, so an MSI-installed agent does not need `caisey-agent policy` run by hand.
PYTHON_FILE = "python/python.exe"
WRITE_POLICY_COMMAND = (
    '-B -m caisey_agent policy --state-dir "[CommonAppDataFolder]Caisey" "--msi-allow-shell=[ALLOW_SHELL]"'
)
WRITE_POLICY_CONDITION = 'NOT REMOVE~="ALL"'
# The approval prompt helper, started at every user's logon (caisey_agent/desktop.py, helper_main): it
# waits for the service's channel in its session and shows the prompts as native dialogs.
RUN_KEY = r"SOFTWARE\Microsoft\Windows\CurrentVersion\Run"
RUN_VALUE_NAME = "CaiseyPrompts"
RUN_VALUE = '"[INSTALLDIR]python\\pythonw.exe" -B -m caisey_agent desktop-helper'
# Before the program files are removed or replaced (uninstall, repair, and this version's removal by a
# later major upgrade): the stopping service has told the helpers it reaches to exit; this ends the rest
# (a disconnected session's helper, one of an older version), so no pythonw.exe from Program Files is
# running when RemoveFiles/InstallFiles come (a file in use is replaced at the next reboot: 3010).
CLOSE_HELPERS_COMMAND = "-B -m caisey_agent desktop-helper --close-all"
CLOSE_HELPERS_CONDITION = "Installed"
ALLOW_SHELL_CONDITION = 'Installed OR NOT ALLOW_SHELL OR ALLOW_SHELL="0" OR ALLOW_SHELL="1"'
ALLOW_SHELL_MESSAGE = "ALLOW_SHELL must be 0 (no shell commands) or 1 (allow them), or not given."


def ident(prefix: str, rel: str) -> str:
    return prefix + hashlib.sha1(rel.encode()).hexdigest()[:20]


def guid(rel: str) -> str:
    return str(uuid.uuid5(NAMESPACE, rel)).upper()


def main(stage: Path, version: str, out: Path) -> None:
    lines: list[str] = []
    components: list[str] = []

    def directory(path: Path, indent: str) -> None:
        for child in sorted(path.iterdir()):
            rel = child.relative_to(stage).as_posix()
            if child.is_dir():
                lines.append(f"{indent}<Directory Id={quoteattr(ident('d', rel))} Name={quoteattr(child.name)}>")
                directory(child, indent + "  ")
                lines.append(f"{indent}</Directory>")
                continue
            cid = ident("c", rel)
            components.append(cid)
            lines.append(f'{indent}<Component Id={quoteattr(cid)} Guid={quoteattr(guid(rel))} Win64="yes">')
            lines.append(
                f"{indent}  <File Id={quoteattr(ident('f', rel))} Name={quoteattr(child.name)} "
                f'Source={quoteattr(rel)} KeyPath="yes"/>'
            )
            if rel == "python/python.exe":
                lines.append(
                    f'{indent}  <ServiceInstall Id="CaiseyAgentService" Name="CaiseyAgent" DisplayName="Caisey Agent" '
                    'Description="Caisey remote support agent: runs the diagnostics and commands your IT provider '
                    'asks for." Type="ownProcess" Start="auto" ErrorControl="normal" Account="LocalSystem" '
                    'Arguments="-B -m caisey_agent service run" Vital="yes"/>'
                )
                lines.append(
                    f'{indent}  <ServiceControl Id="CaiseyAgentControl" Name="CaiseyAgent" Start="install" '
                    'Stop="both" Remove="uninstall" Wait="yes"/>'
                )
            lines.append(f"{indent}</Component>")

    directory(stage, "          ")
    # Public properties, given on msiexec's command line. wixl has no Property/@Secure, and its
    # MajorUpgrade writes SecureCustomProperties itself (a second row breaks the build): they reach the
    # install when it runs as SYSTEM or an administrator (GPO, Intune, msiexec from an elevated prompt),
    # not from a non-administrator's elevated install. Documented in docs/windows.md.
    # Windows Installer logs property values (msiexec /l*v) unless they are listed as hidden.
    props = '    <Property Id="MsiHiddenProperties" Value="ENROLL_TOKEN"/>'

    # REMOVE_STATE=1 on the uninstall's command line (msiexec /x ... /qn REMOVE_STATE=1) also deletes
    # the state folder (identity, credential, queue, policy, logs), which an uninstall otherwise keeps.
    # wixl builds an exe custom action from a File or a property holding the program's path (not
    # from a Directory): CaiseyCmd is set to cmd.exe's path first. RemoveState is deferred, runs as
    # LocalSystem after the service is stopped and the program files are gone, and never during a
    # major upgrade's removal of the older version (UPGRADINGPRODUCTCODE is set there), which must
    # keep the identity. Return="ignore": a leftover folder must not roll the whole uninstall back.
    # Explicit sequence numbers: wixl places After/Before-only actions by hash-table order (seen:
    # an After="CostFinalize" action put after InstallFinalize). 1001: right after CostFinalize
    # (1000); 3650: between RemoveFolders (3600) and CreateFolders (3700). The same hash order
    # moved MajorUpgrade's RemoveExistingProducts from 1401 to 6601 (after InstallFinalize) once
    # these actions existed: it is pinned where it was, right after InstallValidate (1400).
    remove_state = (
        '    <CustomAction Id="SetCaiseyCmd" Property="CaiseyCmd" Value="[System64Folder]cmd.exe" Impersonate="yes"/>\n'
        '    <CustomAction Id="RemoveState" Property="CaiseyCmd" Execute="deferred" Impersonate="no" '
        f'Return="ignore" ExeCommand={quoteattr(REMOVE_STATE_COMMAND)}/>\n'
        "    <InstallExecuteSequence>\n"
        '      <RemoveExistingProducts Sequence="1401"/>\n'
        '      <Custom Action="SetCaiseyCmd" Sequence="1001"/>\n'
        f'      <Custom Action="RemoveState" Sequence="3650">{escape(REMOVE_STATE_CONDITION)}</Custom>\n'
        "    </InstallExecuteSequence>"
    )

    # The explicit local policy (ALLOW_SHELL): python.exe from the just installed files, deferred, as
    # LocalSystem, after InstallServices (5800) and before StartServices (5900), so the service's
    # first start finds it. Return check: a refused value or a policy.json in lockdown fails the
    # install (rolled back) rather than leaving a policy nobody asked for. Not on uninstall. Only when
    # the stage has python.exe (the Wine test of REMOVE_STATE builds an MSI without it).
    #
    # CloseHelpers: python.exe of the installed files (still there: before RemoveFiles 3500), deferred,
    # as LocalSystem (it ends other users' processes), after StopServices (1900), only when the product
    # is installed already (not on a first install: no files, no helpers). Return="ignore": a helper
    # that cannot be ended costs a reboot (3010), not a rolled-back uninstall.
    write_policy = ""
    if (stage / PYTHON_FILE).exists():
        python_key = quoteattr(ident("f", PYTHON_FILE))
        write_policy = (
            f'    <CustomAction Id="WritePolicy" FileKey={python_key} Execute="deferred" '
            f'Impersonate="no" Return="check" ExeCommand={quoteattr(WRITE_POLICY_COMMAND)}/>\n'
            f'    <CustomAction Id="CloseHelpers" FileKey={python_key} Execute="deferred" '
            f'Impersonate="no" Return="ignore" ExeCommand={quoteattr(CLOSE_HELPERS_COMMAND)}/>\n'
        )
        remove_state = remove_state.replace(
            "    </InstallExecuteSequence>",
            f'      <Custom Action="CloseHelpers" Sequence="1950">{escape(CLOSE_HELPERS_CONDITION)}</Custom>\n'
            f'      <Custom Action="WritePolicy" Sequence="5850">{escape(WRITE_POLICY_CONDITION)}</Custom>\n'
            "    </InstallExecuteSequence>",
        )
    # The prompt helper at logon: HKLM Run (every user), removed with the program on uninstall.
    logon = ""
    if (stage / PYTHON_FILE).exists():
        logon = (
            f'      <Component Id="PromptHelperAtLogon" Guid="{guid("prompt-helper-run-key")}" Win64="yes">\n'
            f'        <RegistryValue Root="HKLM" Key={quoteattr(RUN_KEY)} Name="{RUN_VALUE_NAME}" Type="string" '
            f'Value={quoteattr(RUN_VALUE)} KeyPath="yes"/>\n'
            "      </Component>\n"
        )
    # A bad ALLOW_SHELL stops the install before anything changes (LaunchCondition).
    launch = f"    <Condition Message={quoteattr(ALLOW_SHELL_MESSAGE)}>{escape(ALLOW_SHELL_CONDITION)}</Condition>"

    keypath = ' KeyPath="yes"'
    regs = "\n".join(
        f'          <RegistryValue Root="HKLM" Key="SOFTWARE\\Caisey\\Agent" Name="{name}" Type="string" '
        f'Value="[{prop}]"{keypath if i == 0 else ""}/>'
        for i, (prop, name) in enumerate(PROPERTIES)
    )
    refs = "\n".join(f'      <ComponentRef Id="{c}"/>' for c in components)
    wxs = f"""<?xml version="1.0" encoding="utf-8"?>
<Wix xmlns="http://schemas.microsoft.com/wix/2006/wi">
  <Product Id="*" Name="Caisey Agent" Language="1033" Version="{version}" Manufacturer="Caisey"
           UpgradeCode="{UPGRADE_CODE}">
    <Package InstallerVersion="500" Compressed="yes" InstallScope="perMachine"
             Description="Caisey Agent {version}" Comments="Caisey remote support agent"/>
    <Media Id="1" Cabinet="agent.cab" EmbedCab="yes"/>
    <MajorUpgrade DowngradeErrorMessage="A newer Caisey Agent is already installed."/>
{props}
{launch}
{write_policy}{remove_state}
    <Directory Id="TARGETDIR" Name="SourceDir">
      <Directory Id="ProgramFiles64Folder">
        <Directory Id="INSTALLDIR" Name="Caisey">
{chr(10).join(lines)}
        </Directory>
      </Directory>
      <Directory Id="CommonAppDataFolder">
        <Directory Id="STATEDIR" Name="Caisey">
          <Component Id="StateFolder" Guid="{guid("state-folder")}" Win64="yes">
            <CreateFolder/>
          </Component>
        </Directory>
      </Directory>
      <Component Id="InstallSettings" Guid="{guid("install-settings")}" Win64="yes">
{regs}
      </Component>
{logon}    </Directory>
    <Feature Id="Agent" Title="Caisey Agent" Level="1">
      <ComponentRef Id="StateFolder"/>
      <ComponentRef Id="InstallSettings"/>
{'      <ComponentRef Id="PromptHelperAtLogon"/>' + chr(10) if logon else ""}{refs}
    </Feature>
  </Product>
</Wix>
"""
    out.write_text(wxs, encoding="utf-8")
    print(f"{out}: {len(components)} files", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), sys.argv[2], Path(sys.argv[3]))
