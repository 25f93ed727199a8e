"""`caisey-agent`: enroll this machine, run the agent service, inspect its state."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from caisey_agent import __version__, platforms, policy
from caisey_agent.enroll import EnrollError, enroll
from caisey_agent.main import default_state_dir, run
from caisey_agent.prompts import PromptRefused, PromptStore, render
from caisey_agent.state import AgentState


def build_parser() -> argparse.ArgumentParser:
    # --state-dir and --log-level are accepted before or after the sub-command; the
    # sub-command's own value (dest *_sub) wins when both are given.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", dest="state_dir_sub", type=Path, help="where the agent keeps its state")
    common.add_argument("--log-level", dest="log_level_sub")
    parser = argparse.ArgumentParser(prog="caisey-agent", description="Caisey endpoint agent")
    parser.add_argument("--version", action="version", version=f"caisey-agent {__version__}")
    parser.add_argument("--state-dir", type=Path, help="where the agent keeps its state")
    parser.add_argument("--log-level", default=os.environ.get("CAISEY_AGENT_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)

    p_enroll = sub.add_parser(
        "enroll", parents=[common], help="exchange an enrollment token for this machine's identity"
    )
    p_enroll.add_argument("--server", required=True, help="e.g. https://caisey.example.com")
    p_enroll.add_argument("--token", required=True)
    p_enroll.add_argument("--replace", action="store_true", help="replace this machine's existing identity")
    p_enroll.add_argument("--hostname", default="", help="name to enroll under (default: this host's name)")
    p_enroll.add_argument(
        "--insecure",
        action="store_true",
        help="allow http:// to a server on another machine (token, credential and commands unencrypted)",
    )
    p_enroll.add_argument("--ca-bundle", default="", help="PEM file of the CAs to trust for the server's certificate")
    p_enroll.add_argument(
        "--pin-key",
        nargs="?",
        const="record",
        default="",
        metavar="sha256/BASE64",
        help="pin the server's public key: the one given, or (without a value) the one it shows now",
    )

    p_run = sub.add_parser("run", parents=[common], help="run the agent service in the foreground")
    p_run.add_argument("--backoff-cap", type=float, default=60.0, help="longest wait between reconnects (s)")

    sub.add_parser("status", parents=[common], help="show enrollment and queue state")

    p_prompts = sub.add_parser("prompts", parents=[common], help="list, approve or deny approval requests")
    p_prompts.add_argument("verb", nargs="?", choices=["list", "approve", "deny"], default="list")
    p_prompts.add_argument("prompt_id", nargs="?", help="the request's id (its first characters are enough)")
    p_policy = sub.add_parser(
        "policy", parents=[common], help="show the local policy, or allow or forbid shell commands"
    )
    p_policy.add_argument("--allow-shell", action="store_true", help='write "allow_shell": true into policy.json')
    p_policy.add_argument("--forbid-shell", action="store_true", help='write "allow_shell": false into policy.json')
    p_policy.add_argument(
        "--msi-allow-shell",
        metavar="0|1|",
        help="(run by the Windows installer with its ALLOW_SHELL property) 1 or 0 sets allow_shell;"
        ' empty keeps an existing policy.json and otherwise writes "allow_shell": false',
    )
    p_service = sub.add_parser("service", parents=[common], help="the Windows service: install, remove, status")
    p_service.add_argument("verb", choices=["install", "remove", "status", "run"])
    p_helper = sub.add_parser(
        "desktop-helper", help="(Windows: started at logon, or by the service, in a user's session)"
    )
    p_helper.add_argument("--session", type=int, help="the session's id (default: this process's session)")
    p_helper.add_argument(
        "--close-all",
        action="store_true",
        help="(run by the Windows installer before it removes or replaces the program files) end every"
        " session's helper started from this installation",
    )
    return parser


def _state_dir_arg(args) -> Path:
    return args.state_dir or default_state_dir()


def main(argv: list[str] | None = None) -> int:
    platforms.current().prepare_process()
    args = build_parser().parse_args(argv)
    args.state_dir = args.state_dir_sub or args.state_dir
    args.log_level = args.log_level_sub or args.log_level
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if args.command == "desktop-helper":
        from caisey_agent import desktop

        if args.close_all:
            ended = desktop.close_all_helpers(os.path.dirname(sys.executable))
            print(f"desktop helpers ended: {len(ended)}")
            return 0
        return desktop.helper_main(args.session)
    if args.command == "service":
        from caisey_agent import winservice

        return winservice.main(args.verb)
    if args.command == "policy" and args.msi_allow_shell is not None:
        return installer_policy_command(_state_dir_arg(args), args.msi_allow_shell, args)
    state = AgentState(_state_dir_arg(args))
    try:
        if args.command == "enroll":
            try:
                identity = enroll(
                    state=state,
                    server=args.server,
                    token=args.token,
                    replace=args.replace,
                    hostname=args.hostname,
                    insecure=args.insecure,
                    ca_bundle=str(Path(args.ca_bundle).resolve()) if args.ca_bundle else "",
                    pin_key=bool(args.pin_key),
                    key_pin="" if args.pin_key in ("", "record") else args.pin_key,
                )
            except EnrollError as exc:
                print(f"caisey-agent: {exc}", file=sys.stderr)
                return 2
            print(f"enrolled as endpoint {identity.endpoint_id} in {identity.client_group} ({identity.tenant})")
            if identity.key_pin:
                print(f"server key pinned: {identity.key_pin}")
            return 0
        if args.command == "status":
            print(state.to_json())
            return 0
        if args.command == "policy":
            return policy_command(state, allow_shell=args.allow_shell, forbid_shell=args.forbid_shell)
        if args.command == "prompts":
            return prompts_command(state, args.verb, args.prompt_id)
        return run(state, backoff_cap=args.backoff_cap)
    finally:
        state.close()


def policy_command(state: AgentState, *, allow_shell: bool, forbid_shell: bool) -> int:
    """Show the policy in force; with --allow-shell / --forbid-shell, set ``allow_shell`` in policy.json
    first, keeping its other keys (what an installer or ``caisey demo`` runs)."""
    if allow_shell and forbid_shell:
        print("caisey-agent: give --allow-shell or --forbid-shell, not both", file=sys.stderr)
        return 2
    if allow_shell or forbid_shell:
        current = policy.load_policy(state.dir)
        if current.lockdown:
            print(f"caisey-agent: not changing a policy that is not in use: {current.problem}", file=sys.stderr)
            return 1
        path = policy.policy_path(state.dir)
        doc = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        doc["allow_shell"] = allow_shell
        policy.write_policy(state.dir, doc)
    print(json.dumps(policy.load_policy(state.dir).describe(), indent=2))
    return 0


def installer_policy_command(state_dir: Path, value: str, args) -> int:
    """What the MSI runs before it starts the service: leave the explicit local policy asked for
    (policy.apply_installer_choice). Secures the state folder first (the installer runs before the
    service ever did). A non-zero exit makes Windows Installer roll the install back."""
    if args.allow_shell or args.forbid_shell:
        _say("caisey-agent: --msi-allow-shell goes without --allow-shell/--forbid-shell", error=True)
        return 2
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        platforms.current().secure_dir(state_dir)
        _say(policy.apply_installer_choice(state_dir, value))
    except (ValueError, policy.PolicyNotInUse) as exc:
        _say(f"caisey-agent: {exc}", error=True)
        return 2
    return 0


def _say(line: str, *, error: bool = False) -> None:
    """Print, where there is somewhere to print: an installer's custom action may run without a console
    (sys.stdout is None there)."""
    stream = sys.stderr if error else sys.stdout
    if stream is not None:
        print(line, file=stream, flush=True)


def prompts_command(state: AgentState, verb: str, prompt_id: str | None) -> int:
    """The command-line path for the end user: always there, graphical session or not."""
    store = PromptStore(state.db)
    if verb == "list":
        waiting = store.open_prompts()
        if not waiting:
            print("No approval requests are waiting.")
        for held in waiting:
            print(render(held))
            store.acknowledge(held.prompt_id)  # the user has now seen it
        return 0
    if not prompt_id:
        print(f"caisey-agent: give the id of the request to {verb}", file=sys.stderr)
        return 2
    try:
        held = store.decide(prompt_id, approve=verb == "approve")
    except PromptRefused as exc:
        print(f"caisey-agent: {exc}", file=sys.stderr)
        return 1
    print(f"{held.state}: {held.title} (the running agent tells the technician within a second or two)")
    return 0
