"""The `facegate` console script (``facegate.cli.main:main``) and ``python -m facegate.cli.main``, which
subprocesses and tests run: both stay here while the commands live in the modules ``app`` assembles."""

from __future__ import annotations

import sys

from facegate.cli.app import app, main

__all__ = ["app", "main"]

if __name__ == "__main__":
    sys.exit(main())
