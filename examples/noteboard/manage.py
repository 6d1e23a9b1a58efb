#!/usr/bin/env python
"""The note board's command line (run from this folder, with the repository root on PYTHONPATH for ``realtime``)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "noteboard_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
