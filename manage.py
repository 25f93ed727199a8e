#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "caisey.settings")
    if sys.argv[1:2] == ["demo"]:
        # The demo runs on this machine over plain http with a built-in secret key (caisey/settings.py);
        # its server, worker and agent inherit the setting.
        os.environ.setdefault("CAISEY_DEVELOPMENT", "true")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
