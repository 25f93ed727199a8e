"""The desktop prompt channel's Windows calls, run under Wine by bin/test-windows with the installed
python.exe: the service's end (caisey_agent.desktop.WindowsDesktopSessions.listen: the session's user
token, the pipe created with its SDDL, an overlapped ConnectNamedPipe, the client's session checked,
overlapped reads and writes) and the helper's end (desktop._pipe_connect and serve_service) in another
process, answering a prompt, then told to exit by the service with a second prompt's dialog open (the
dialog is closed, the helper process ends). The dialog is replaced by an automatic "yes" (no desktop under the test).
Prints one JSON object.

What this cannot show: that another user is refused (a Wine prefix has one user), the dialog, and a
helper in another session started with CreateProcessAsUser.
"""

import asyncio
import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

from caisey_agent import desktop

HELPER = """
import sys
from caisey_agent import desktop

def ask(msg, closed):
    if msg["prompt_id"].startswith("a"):
        return True
    print("dialog closed by the exit:", closed.wait(20), flush=True)  # the second prompt: left open
    return None

read, write, close = desktop._pipe_connect(int(sys.argv[1]))
try:
    print("told to exit:", desktop.serve_service(read, write, user="pipe-check", ask=ask), flush=True)
finally:
    close()
"""


async def main() -> dict:
    import win32security
    import win32ts

    session = win32ts.ProcessIdToSessionId(os.getpid())
    out: dict = {"session": session}
    channel = desktop.WindowsDesktopSessions().listen(session)
    got = win32security.GetSecurityInfo(
        channel.handle,
        win32security.SE_KERNEL_OBJECT,
        win32security.DACL_SECURITY_INFORMATION | win32security.OWNER_SECURITY_INFORMATION,
    )
    out["sddl"] = win32security.ConvertSecurityDescriptorToStringSecurityDescriptor(
        got,
        win32security.SDDL_REVISION_1,
        win32security.DACL_SECURITY_INFORMATION | win32security.OWNER_SECURITY_INFORMATION,
    )
    helper = subprocess.Popen(
        [sys.executable, "-c", HELPER, str(session)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        reader, writer = await asyncio.wait_for(channel.accept(), 60)
        link = desktop.HelperLink(reader, writer)
        out["hello_user"] = await asyncio.wait_for(link.handshake(), 30)
        prompt = SimpleNamespace(
            prompt_id="a" * 32,
            title="Shell command",
            detail="shell command (cmd): ver",
            requested_by="tech@example",
            organisation="Test",
            deadline=time.time() + 60,
        )
        await link.show(prompt)
        decision = await asyncio.wait_for(link.next_decision(), 30)
        out["decision"] = {"prompt_id_ok": decision.prompt_id == prompt.prompt_id, "approve": decision.approve}
        # The service stops: a dialog still open is closed and the helper exits (files in use).
        await link.show(SimpleNamespace(**{**vars(prompt), "prompt_id": "b" * 32}))
        await link.exit("the service is stopping")
        out["helper_gone"] = (await asyncio.wait_for(reader.readline(), 30)) == b""
        writer.close()
        out["helper_exit"] = helper.wait(30)
    finally:
        if helper.poll() is None:
            helper.kill()
        out["helper_output"] = helper.stdout.read().decode("utf-8", "replace")[-400:]
        out["helper_exited_on_request"] = (
            "told to exit: True" in out["helper_output"] and "dialog closed by the exit: True" in out["helper_output"]
        )
    return out


if __name__ == "__main__":
    try:
        result = asyncio.run(main())
    except Exception as exc:  # noqa: BLE001 - reported, the caller decides
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)
