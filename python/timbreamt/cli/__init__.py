"""Command line: argument parsing and printing only; the work lives in the parts' modules.

Each group of commands registers itself from its own module (transcribe.py, train.py, web.py, ...).

Printing goes through ``emit``: when the reader of stdout goes away (``timbreamt transcribe ... | head``)
the command stops printing but finishes its work (the outputs are still written), without a traceback;
when stdout cannot be written (a full disk, /dev/full) that is one error line and a non-zero exit."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from .. import __version__
from ..core.errors import OutputError, TimbreamtError

# command groups, in the order of `timbreamt --help`
GROUPS = ("transcribe", "train", "count", "web", "batch")

# streams whose reader has gone (EPIPE) or that failed (ENOSPC...): name -> the OSError
_LOST: dict[str, OSError] = {}


def _silence(name: str, exc: OSError) -> None:
    """Stop writing to sys.<name>: point its descriptor at /dev/null, so that Python's own flush at exit
    does not fail again."""
    _LOST.setdefault(name, exc)
    stream = getattr(sys, name)
    stream = getattr(stream, "_stream", stream)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


class _Guarded:
    """sys.stdout/sys.stderr for the length of a command: a write that fails (EPIPE, ENOSPC) silences
    the stream and is recorded instead of raising in the middle of the work (print() included)."""

    def __init__(self, name: str, stream) -> None:
        self._name, self._stream = name, stream

    def write(self, text: str) -> int:
        if self._name not in _LOST:
            try:
                return self._stream.write(text)
            except OSError as exc:
                _silence(self._name, exc)
        return len(text)

    def flush(self) -> None:
        if self._name not in _LOST:
            try:
                self._stream.flush()
            except OSError as exc:
                _silence(self._name, exc)

    def __getattr__(self, attr: str):
        return getattr(self._stream, attr)


def emit(text: str, err: bool = False) -> None:
    """Print one line to stdout (or stderr) and flush it; never raises for the stream (see _Guarded)."""
    stream = sys.stderr if err else sys.stdout
    if stream is not None:
        print(text, file=stream, flush=True)


def _safe_text_streams() -> None:
    """File names that are not UTF-8 reach us as surrogate escapes: print them back as the same bytes
    (stdout, as ls does) instead of failing on them."""
    for name, errors in (("stdout", "surrogateescape"), ("stderr", "backslashreplace")):
        stream = getattr(sys, name)
        if hasattr(stream, "reconfigure"):
            utf8 = (getattr(stream, "encoding", "") or "").lower().replace("-", "") == "utf8"
            try:
                stream.reconfigure(errors=errors if utf8 else "backslashreplace")
            except (ValueError, OSError):
                pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="timbreamt", description="Timbre-agnostic multi-instrument transcription")
    p.add_argument("--version", action="version", version=f"timbreamt {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        importlib.import_module(f"{__name__}.{group}").register(sub)
    return p


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:     # --help, --version, usage errors: argparse has printed its message
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return args.func(args)
    except TimbreamtError as exc:
        emit(f"timbreamt: error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        emit("timbreamt: interrupted", err=True)
        return 130
    except BrokenPipeError as exc:   # a command printing with print(): its reader left mid-way
        _silence("stdout", exc)
        return 128 + 13              # as if SIGPIPE had ended it, without the traceback


def main(argv: list[str] | None = None) -> int:
    _LOST.clear()
    _safe_text_streams()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (_Guarded(n, s) if s is not None else None for n, s in zip(("stdout", "stderr"), saved))
    try:
        code = _run(argv)
        if sys.stdout is not None:
            sys.stdout.flush()
    finally:
        sys.stdout, sys.stderr = saved
    lost = _LOST.get("stdout")
    if lost is not None and not isinstance(lost, BrokenPipeError):
        # the reader of a pipe may leave early (| head): that is no error; a failing stream is
        emit(f"timbreamt: error: cannot write to standard output: {lost.strerror or lost}", err=True)
        code = code or OutputError.exit_code
    return code


if __name__ == "__main__":
    sys.exit(main())
