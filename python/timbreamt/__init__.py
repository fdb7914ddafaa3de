"""timbreamt: timbre-agnostic multi-instrument music transcription.

    >>> import timbreamt
    >>> result = timbreamt.transcribe("song.wav", instruments=3)
    >>> result.to_midi("song.mid")

Parts, by what they may import (tests/test_layout.py holds the rules):
- ``timbreamt.core``: numpy only; the post-processing the CLI and the browser (Pyodide) share;
- ``timbreamt.runtime``: audio reading, the onnxruntime session, the transcriber, output files; no torch;
- ``timbreamt.training``: CQT, models, data, training, export (the ``[train]`` extra: torch);
- ``timbreamt.tools``: evaluation, benchmarks, the web bundle and its server.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # pragma: no cover
    import numpy as np

    from .core.transcription import Transcription

__version__ = "0.6.0"
__all__ = ["transcribe", "__version__"]


def transcribe(audio: str | Path | np.ndarray, sr: int | None = None, model: str | Path = "septimbre",
               instruments: int | str | None = "auto", onset_threshold: float | None = None,
               frame_threshold: float | None = None, min_note_ms: float | None = None, threads: int = 2,
               melodia: bool | None = None) -> Transcription:
    """Transcribe audio (a file path, or an array (samples,) / (samples, channels) with its rate ``sr``).

    model: 'septimbre' (notes + instruments), 'basicamt' (notes only) or a path to a graph of the
    contract. instruments: a whole number 1..16, 'auto' (estimated) or None (one track).
    Thresholds are probabilities in (0, 1); min_note_ms in milliseconds; None keeps the model's
    calibrated defaults. Returns a Transcription (tracks of notes; ``to_json``, ``to_midi``...).
    To transcribe many files, keep one ``timbreamt.runtime.transcriber.Transcriber`` (the model loads once).
    """
    from .runtime.transcriber import transcribe as _transcribe

    return _transcribe(audio, sr, model=model, instruments=instruments, onset_threshold=onset_threshold,
                       frame_threshold=frame_threshold, min_note_ms=min_note_ms, threads=threads, melodia=melodia)
