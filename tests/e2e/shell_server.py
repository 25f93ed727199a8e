"""A long-lived Django shell for e2e tests: one JSON-encoded snippet per line in, its output out.

Starting `manage.py shell` costs a second or two; tests that poll the stack's database
would spend most of their time starting Django. This keeps one process per stack.
"""

import contextlib
import io
import json
import os
import sys
import traceback

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "caisey.settings")
import django  # noqa: E402

django.setup()
from django.db import connections  # noqa: E402

from caisey import tenancy  # noqa: E402

for line in sys.stdin:
    code = json.loads(line)
    out = io.StringIO()
    ok, err = True, ""
    try:
        # An operator's shell on the server: cross-tenant system work, named (services the
        # snippet calls still bind their own tenant inside it).
        with contextlib.redirect_stdout(out), tenancy.system():
            exec(code, {})
    except BaseException:  # report everything, keep serving
        ok, err = False, traceback.format_exc()
    finally:
        connections.close_all()  # the next snippet sees what other processes committed
    sys.stdout.write(json.dumps({"ok": ok, "out": out.getvalue(), "err": err}) + "\n")
    sys.stdout.flush()
