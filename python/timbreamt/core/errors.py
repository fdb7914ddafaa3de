"""Typed errors: each carries a one-line message meant for the user (the CLI prints it, no traceback)."""


class TimbreamtError(Exception):
    """Base class of every error timbreamt raises on purpose."""

    exit_code = 1


class OptionError(TimbreamtError, ValueError):
    """An option (threshold, duration, number of instruments, threads...) is out of its range or does
    not fit the model. Exit code 2, as for argparse's usage errors."""

    exit_code = 2


class AudioError(TimbreamtError, ValueError):
    """The audio input cannot be read or is not usable."""

    exit_code = 3


class ModelError(TimbreamtError):
    """A model file is missing, corrupt or does not follow the ONNX contract."""

    exit_code = 4


class OutputError(TimbreamtError):
    """An output cannot be written (exists already, unwritable folder)."""

    exit_code = 5


class DataError(TimbreamtError):
    """Training data, soundfonts, MIDI or checkpoints are missing or unreadable."""

    exit_code = 6


class ExportError(TimbreamtError):
    """An exported ONNX graph failed one of the exporter's guarantees."""

    exit_code = 7


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """An error as one line for the user: the first line of its message (at most ``limit`` characters),
    or its type's name when it has none."""
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return line[:limit] if limit else line
