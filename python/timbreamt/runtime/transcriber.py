"""The transcription pipeline: audio -> ONNX model in windows -> notes -> tracks. No torch.

    >>> import timbreamt
    >>> result = timbreamt.transcribe("song.wav", instruments="auto")      # Transcription
    >>> result.to_json()

Works with our exported graphs and with any graph of the same contract (input ``audio`` (1, 1, n) at
44.1 kHz; outputs ``onset``, ``frame`` (1, 84, frames) and optionally ``embedding``), such as the
reference models (whose in-graph max division makes windows disagree slightly; ours do not).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .audio import AudioStream, prepare_array
from .model import Model
from ..core.constants import CONTEXT_FRAMES, CORE_FRAMES, GRAPH_HOP, GRAPH_SAMPLE_RATE
from ..core.contract import DecodeOptions, check_options, decode_options, resolve_instruments
from ..core.pipeline import MapAccumulator
from ..core.windows import check_window_sizes, n_frames, window_around, window_crop
from ..core.errors import AudioError, OptionError
from ..core.transcription import Transcription


# The frame map is first allocated for the length a file's header announces, at most this many frames
# (an hour: 84 x 310k float16 = 52 MB). np.zeros maps untouched pages lazily, but a header claiming
# billions of samples asked for EiB, which fails outright; past the cap the map grows as audio arrives.
MAX_PREALLOCATED_FRAMES = 310_080


def _windows_from_stream(blocks: Iterable[np.ndarray], core_frames: int, context_frames: int):
    """Yield (window, samples) over a stream of 44.1 kHz blocks, keeping only what the next window
    needs in memory. The total length is found at the end of the stream, not trusted from a header."""
    check_window_sizes(core_frames, context_frames)
    buf = np.zeros(0, dtype=np.float32)
    buf_start = 0
    it = iter(blocks)
    eof = False
    core_start = 0
    while True:
        need_end = (core_start + core_frames + context_frames) * GRAPH_HOP
        pieces = [buf]
        have = buf_start + len(buf)
        while not eof and have < need_end:
            try:
                block = next(it)
            except StopIteration:
                eof = True
                break
            pieces.append(block)
            have += len(block)
        if len(pieces) > 1:
            buf = np.concatenate(pieces)
        total = buf_start + len(buf)
        if eof:
            last_frame = n_frames(total)
            if core_start >= last_frame:
                return
            core_end = min(core_start + core_frames, last_frame)
        else:
            core_end = core_start + core_frames
        window = window_around(core_start, core_end, context_frames, total)
        yield window, buf[window.in_start - buf_start:window.in_end - buf_start], total, eof
        core_start = core_end
        drop = max(0, core_start - context_frames) * GRAPH_HOP - buf_start
        if drop > 0:
            buf = buf[drop:]
            buf_start += drop


def _release_freed_memory() -> None:
    """Give freed heap pages back to the OS (glibc keeps them after each window's large buffers,
    which made peak RSS creep up by ~20 MB a window). A no-op where there is no glibc."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None


class Transcriber:
    """Holds a loaded model; transcribe files or arrays one after another."""

    def __init__(self, model: str | Path = "septimbre", threads: int = 2) -> None:
        self.model = Model(model, threads)

    def options(self, onset_threshold: float | None = None, frame_threshold: float | None = None,
                min_note_ms: float | None = None, melodia: bool | None = None) -> DecodeOptions:
        """Decoding options: the model's calibrated defaults, each overridable (core/contract.py)."""
        return decode_options(self.model.metadata, self.model.has_embedding, onset_threshold, frame_threshold,
                              min_note_ms=min_note_ms, melodia=melodia)

    def transcribe(self, audio: str | Path | np.ndarray, sr: int | None = None, instruments: int | str | None = "auto",
                   onset_threshold: float | None = None, frame_threshold: float | None = None,
                   min_note_ms: float | None = None, progress: Callable[[float], None] | None = None,
                   core_frames: int = CORE_FRAMES, context_frames: int = CONTEXT_FRAMES,
                   melodia: bool | None = None) -> Transcription:
        """Transcribe a file path, or an array (samples,) / (samples, channels) with its rate ``sr``.

        instruments: an int N >= 1, 'auto' (estimated) or None (one track). With a model without an
        embedding (basicamt) only one track is possible.
        progress: called with the fraction of audio done (0..1) after each window.
        melodia: add notes from frame activity that has no onset (None: the model's calibrated default).
        """
        instruments = resolve_instruments(instruments, self.model.has_embedding, self.model.name)
        acc, sample_rate, duration, warnings = self.accumulate(
            audio, sr, instruments is not None, onset_threshold, frame_threshold, min_note_ms, progress,
            core_frames, context_frames, melodia)
        result = acc.finish(self.model.name, sample_rate, duration, instruments)
        result.warnings[:0] = warnings
        return result

    def accumulate(self, audio: str | Path | np.ndarray, sr: int | None = None, with_embedding: bool = True,
                   onset_threshold: float | None = None, frame_threshold: float | None = None,
                   min_note_ms: float | None = None, progress: Callable[[float], None] | None = None,
                   core_frames: int = CORE_FRAMES, context_frames: int = CONTEXT_FRAMES,
                   melodia: bool | None = None) -> tuple[MapAccumulator, int, float, list[str]]:
        """Run the model over the audio: (the accumulated maps, the input's sample rate, its duration in
        seconds, warnings). ``transcribe`` finishes them into tracks; tools that need the notes and their
        embeddings themselves (training/count.py) call ``decode`` and ``note_embeddings`` on them."""
        opts = self.options(onset_threshold, frame_threshold, min_note_ms, melodia)
        warnings: list[str] = []
        stream = None
        if isinstance(audio, (str, Path, bytes)) or hasattr(audio, "__fspath__"):
            if sr is not None:
                raise OptionError("sr is for arrays only: a file's sample rate is read from the file")
            stream = AudioStream(os.fsdecode(audio) if isinstance(audio, bytes) else audio, GRAPH_SAMPLE_RATE)
            sample_rate, blocks = stream.sample_rate, iter(stream)
            expected = stream.header_frames / stream.sample_rate if stream.header_frames else 0.0
        else:
            if sr is None:
                raise ValueError("an audio array needs its sample rate: transcribe(array, sr=...)")
            samples = prepare_array(audio, sr, GRAPH_SAMPLE_RATE, warnings)
            sample_rate, blocks, expected = int(sr), iter([samples]), len(samples) / GRAPH_SAMPLE_RATE
        # the header's length is only a hint for the frame map's first size, capped: a header may lie
        hint = min(n_frames(int(expected * GRAPH_SAMPLE_RATE)), MAX_PREALLOCATED_FRAMES)
        acc = MapAccumulator(opts, with_embedding=self.model.has_embedding and with_embedding,
                             expected_frames=hint)
        total = 0
        try:
            for window, chunk, total, eof in _windows_from_stream(blocks, core_frames, context_frames):
                # the convolutions only run where the core needs them (~25% of the work saved)
                crop = window_crop(window, n_frames(len(chunk)), acc.crop_margin) if self.model.can_crop else (0, 0)
                # the stream has ended: this is the last window or one of the last two
                maps = self.model.run(chunk, crop, release_memory=eof)
                acc.add(window, maps["onset"], maps["frame"], maps.get("embedding"),
                        map_start=window.frame_start + crop[0])
                del maps
                _release_freed_memory()
                if progress and expected > 0:
                    progress(min(1.0, window.in_end / GRAPH_SAMPLE_RATE / expected))
        finally:
            if stream is not None:
                stream.close()
        if stream is not None:
            warnings += stream.warnings
        if total == 0:
            where = f"{audio}: " if stream else ""
            raise AudioError(f"{where}audio is empty (0 samples)")
        return acc, sample_rate, total / GRAPH_SAMPLE_RATE, warnings

def transcribe(audio: str | Path | np.ndarray, sr: int | None = None, model: str | Path = "septimbre",
               instruments: int | str | None = "auto", onset_threshold: float | None = None,
               frame_threshold: float | None = None, min_note_ms: float | None = None, threads: int = 2,
               melodia: bool | None = None) -> Transcription:
    """Transcribe audio (a path, or an array with its sample rate ``sr``) into a Transcription."""
    # bounds first: a bad option is reported before the model is loaded
    check_options(onset_threshold, frame_threshold, min_note_ms, instruments, threads)
    return Transcriber(model, threads).transcribe(audio, sr, instruments, onset_threshold, frame_threshold, min_note_ms,
                                                  melodia=melodia)
