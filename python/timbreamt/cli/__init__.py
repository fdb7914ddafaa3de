"""Command line: argument parsing and printing only; the work lives in the parts' modules.

Each group of commands registers itself from its own module (transcribe.py, train.py, web.py, ...)."""
from __future__ import annotations

import argparse
import importlib
import sys

from ..core.errors import TimbreamtError

# command groups, in the order of `timbreamt --help`
GROUPS = ("transcribe", "train", "web", "batch")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="timbreamt", description="Timbre-agnostic multi-instrument transcription")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        importlib.import_module(f"{__name__}.{group}").register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except TimbreamtError as exc:
        print(f"timbreamt: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("timbreamt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
