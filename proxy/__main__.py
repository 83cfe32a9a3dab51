"""`python -m proxy` runs the command-line interface."""

from __future__ import annotations

import sys

from proxy.cli import main

sys.exit(main())
