"""`python -m monitoring report ...`: see monitoring.cli."""

import sys

from monitoring.cli import main

sys.exit(main())
