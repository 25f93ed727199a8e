"""The data folder holds the SQLite database (with session keys), the embedded Redis, the approval
e-mails of the file backend and the demo's logs: only its owner may read any of it."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def make_private(data_dir: Path) -> None:
    """Create ``data_dir`` owner-only (0700), tighten it if it is ours, and make every file this
    process and its children (Redis, Celery, the demo's agent) create from now on owner-only (umask
    077: files 0600, folders 0700). A shared folder (sticky bit, like /tmp) or another user's is
    left as it is: pointing CAISEY_DATA_DIR there must not change it for everyone."""
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = data_dir.stat()
    if info.st_uid == os.getuid() and not info.st_mode & stat.S_ISVTX and stat.S_IMODE(info.st_mode) != 0o700:
        data_dir.chmod(0o700)
