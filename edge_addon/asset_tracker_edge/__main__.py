"""`python -m asset_tracker_edge` is the `asset-tracker-edge` command."""

import sys

from .cli import main

sys.exit(main())
