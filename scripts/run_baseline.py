"""Accuracy of the non-learned pixel-statistics baseline on every bench split (the bar to beat).

    python scripts/run_baseline.py                       # data/synthetic, both methods
    python scripts/run_baseline.py data/synthetic --json outputs/baseline.json
"""

import sys

from preferthinker.data.synthetic.baseline import main

if __name__ == "__main__":
    sys.exit(main())
