"""Console entry point lvs_make_phantoms (stage not implemented yet)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lvs_make_phantoms", description="lvs_make_phantoms: this stage is not implemented yet.")
    parser.parse_args(argv)
    print("lvs_make_phantoms: this stage is not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
