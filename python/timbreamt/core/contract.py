"""The model contract: a graph's metadata and the user's options -> decoding and clustering settings.

One place for the decisions the CLI, the Python API, the Pyodide job (the page) and the noteDigger
workers all make, so they cannot drift: which thresholds a graph decodes with (its calibrated
metadata, else the reference models' values), how ``instruments`` is checked and normalised, and the
bounds of every user option. Pure Python (runs in Pyodide).
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

from . import constants as C
from . import notes
from .count import CountModel, count_model_from_metadata
from .errors import ModelError, OptionError


@dataclass
class DecodeOptions:
    """Settings of note decoding (core/notes.py). Thresholds are probabilities, lengths in frames."""

    onset_threshold: float = C.ONSET_THRESHOLD
    frame_threshold: float = C.FRAME_THRESHOLD
    min_note_frames: int = C.MIN_NOTE_FRAMES
    energy_tolerance: int = C.ENERGY_TOLERANCE
    melodia: bool = True
    # clustering: how --instruments auto counts (core/count.py); None: the eigengap
    count_model: CountModel | None = None

    def validate(self) -> None:
        """Raise OptionError (a ValueError) naming the first option out of its range."""
        try:
            notes.validate_decoding(self.onset_threshold, self.frame_threshold, self.min_note_frames,
                                    self.energy_tolerance)
        except OptionError:
            raise
        except ValueError as exc:
            raise OptionError(str(exc)) from exc


def _kind(has_embedding: bool) -> str:
    return "septimbre" if has_embedding else "basicamt"


def min_note_frames_from_ms(min_note_ms: float) -> int:
    """Frames of a minimum note length given in milliseconds (finite, > 0, <= MAX_NOTE_MS)."""
    if isinstance(min_note_ms, bool) or not isinstance(min_note_ms, numbers.Real) or not math.isfinite(min_note_ms) \
            or not 0 < min_note_ms <= C.MAX_NOTE_MS:
        raise OptionError(f"min_note_ms must be a finite number of milliseconds in (0, {C.MAX_NOTE_MS:g}], "
                         f"got {min_note_ms!r}")
    return max(1, int(round(min_note_ms / 1000 * C.FRAMES_PER_SECOND)))


def decode_options(metadata: Mapping[str, str], has_embedding: bool, onset_threshold: float | None = None,
                   frame_threshold: float | None = None, min_note_ms: float | None = None,
                   min_note_frames: int | None = None, melodia: bool | None = None) -> DecodeOptions:
    """Decoding settings of a graph: its calibrated metadata (``onset_threshold``, ``frame_threshold``,
    ``min_note_frames``, ``melodia``), else the reference models' values; each overridable by the user.

    metadata: the graph's ONNX metadata_props (str -> str). min_note_ms and min_note_frames are two
    ways to give the same option (ms from the CLI and the API, frames from the JS API); give one.
    Raises OptionError (a ValueError) naming the option that is out of range.
    """
    if min_note_ms is not None and min_note_frames is not None:
        raise OptionError("give min_note_ms or min_note_frames, not both")
    onset_default, frame_default = C.REFERENCE_THRESHOLDS[_kind(has_embedding)]
    try:
        opts = DecodeOptions(
            onset_threshold=float(metadata.get("onset_threshold", onset_default)),
            frame_threshold=float(metadata.get("frame_threshold", frame_default)),
            min_note_frames=int(metadata.get("min_note_frames", C.MIN_NOTE_FRAMES)),
            energy_tolerance=C.ENERGY_TOLERANCE,
            # the melodia pass (notes from frame activity without an onset) is calibrated per model
            melodia=metadata.get("melodia", "1") != "0",
            count_model=count_model_from_metadata(metadata) if has_embedding else None)
    except ValueError as exc:
        raise ModelError(f"the model's metadata holds an unreadable decoding default: {exc}") from exc
    if onset_threshold is not None:
        opts.onset_threshold = onset_threshold
    if frame_threshold is not None:
        opts.frame_threshold = frame_threshold
    if min_note_ms is not None:
        opts.min_note_frames = min_note_frames_from_ms(min_note_ms)
    if min_note_frames is not None:
        opts.min_note_frames = min_note_frames
    if melodia is not None:
        if not isinstance(melodia, bool):
            raise OptionError(f"melodia must be true or false, got {melodia!r}")
        opts.melodia = melodia
    opts.validate()
    return opts


def resolve_instruments(instruments: int | str | None, has_embedding: bool, model_name: str = "this model") -> int | str | None:
    """Check and normalise the number of instruments asked for.

    instruments: a whole number 1..MAX_INSTRUMENTS, 'auto', or None (one track); a string of digits is
    read as a number (the page's select). Returns 'auto', an int >= 2, or None (one track: 1 means the
    same, and no embedding is then needed). A model without a timbre embedding gives one track for
    'auto'/None/1 and raises ModelError for N >= 2; anything else raises OptionError (a ValueError).
    """
    value = instruments
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if value is not None and value != "auto" and (isinstance(value, bool) or not isinstance(value, int)
                                                  or not 1 <= value <= C.MAX_INSTRUMENTS):
        raise OptionError(f"instruments must be a whole number from 1 to {C.MAX_INSTRUMENTS}, 'auto' or none, "
                         f"got {instruments!r}")
    if value == 1:
        value = None
    if not has_embedding:
        if isinstance(value, int):
            raise ModelError(f"{model_name} has no timbre embedding: it cannot separate {value} instruments "
                             "(use the septimbre model)")
        return None
    return value


def check_count(value: int, name: str, maximum: int) -> int:
    """A whole number 1..maximum (threads, jobs); OptionError otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= maximum:
        raise OptionError(f"{name} must be a whole number from 1 to {maximum}, got {value!r}")
    return int(value)


def check_options(onset_threshold: float | None = None, frame_threshold: float | None = None,
                  min_note_ms: float | None = None, instruments: int | str | None = "auto",
                  threads: int | None = None, jobs: int | None = None) -> None:
    """Check the user's options against their bounds before any model is loaded or any audio read
    (decode_options and resolve_instruments themselves, so nothing is accepted here that fails there).
    Whether a model can separate the instruments is checked once it is loaded (resolve_instruments).
    Raises OptionError naming the first bad option."""
    # the decoding checks themselves, over defaults that pass them: only the user's values can fail
    decode_options({}, True, onset_threshold, frame_threshold, min_note_ms=min_note_ms)
    resolve_instruments(instruments, True)
    if threads is not None:
        check_count(threads, "threads", C.MAX_THREADS)
    if jobs is not None:
        check_count(jobs, "jobs", C.MAX_JOBS)
