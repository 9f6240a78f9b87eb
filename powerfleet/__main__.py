"""``python -m powerfleet`` runs the CLI."""

import sys

from powerfleet.cli import main

sys.exit(main())
