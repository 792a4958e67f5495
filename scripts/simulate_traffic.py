"""Send real labelled photos to the service and post their true labels as feedback.

    python scripts/simulate_traffic.py --url http://127.0.0.1:8000 \
        --data ../shared/data/fullres --rate 5 --count 50
    # a shifted run: only cats, darkened (add --grayscale for colourless photos)
    python scripts/simulate_traffic.py --only-class cat --darken 0.35 --count 40

The same as `python -m monitoring simulate` (monitoring/traffic.py holds the code);
prints a JSON summary of what the client itself saw.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout whether or not the project is installed
    sys.path.insert(0, str(ROOT))

from monitoring.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["simulate", *sys.argv[1:]]))
