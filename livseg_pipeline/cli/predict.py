"""Console entry point lvs_predict (stage not implemented yet)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lvs_predict", description="lvs_predict: this stage is not implemented yet.")
    parser.parse_args(argv)
    print("lvs_predict: this stage is not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
