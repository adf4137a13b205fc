"""Console entry point lvs_demo (stage not implemented yet)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lvs_demo", description="lvs_demo: this stage is not implemented yet.")
    parser.parse_args(argv)
    print("lvs_demo: this stage is not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
