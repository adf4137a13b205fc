"""Console entry point lvs_evaluate (stage not implemented yet)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lvs_evaluate", description="lvs_evaluate: this stage is not implemented yet.")
    parser.parse_args(argv)
    print("lvs_evaluate: this stage is not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
