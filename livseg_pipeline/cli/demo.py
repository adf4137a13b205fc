"""Console entry point ``lvs_demo``: see :mod:`livseg_pipeline.demo`."""

from __future__ import annotations

import sys

from livseg_pipeline.demo import main

if __name__ == "__main__":
    sys.exit(main())
