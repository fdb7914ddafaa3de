"""The Python half of the browser worker (numpy only, runs in Pyodide).

The worker (web/worker.js) runs the ONNX graph with onnxruntime-web on the windows planned here, hands
each window's maps to ``BrowserJob.add`` and gets the Transcription JSON and MIDI bytes from here, so
the page decodes and clusters with the very code the CLI uses.
"""
from __future__ import annotations

import json

import numpy as np

from .chunks import (CONTEXT_FRAMES, CORE_FRAMES, INPUT_RATE, N_PITCHES, DecodeOptions, MapAccumulator, n_frames,
                     plan_windows, window_crop)
from .midi import midi_bytes


class BrowserJob:
    """One transcription: plan windows for ``n_samples`` at 44.1 kHz, accumulate, finish."""

    def __init__(self, n_samples: int, model: str, has_embedding: bool, instruments, sample_rate: int,
                 onset_threshold: float, frame_threshold: float, min_note_frames: int, energy_tolerance: int = 11,
                 core_frames: int = CORE_FRAMES, context_frames: int = CONTEXT_FRAMES, melodia: bool = True,
                 can_crop: bool = False) -> None:
        """can_crop: the graph takes a ``crop`` input (frames skipped before its convolutions); the
        worker then feeds each window's crop from ``window_list``."""
        if int(n_samples) <= 0:
            raise ValueError("audio is empty (0 samples)")
        if instruments in ("auto", None):
            self.instruments = instruments
        else:
            self.instruments = int(instruments)
            if self.instruments < 1:
                raise ValueError(f"instruments must be >= 1 or 'auto', got {instruments}")
        if not has_embedding:
            if isinstance(self.instruments, int) and self.instruments > 1:
                raise ValueError(f"{model} has no timbre embedding: it cannot separate {self.instruments} "
                                 "instruments (use the septimbre model)")
            self.instruments = None
        if self.instruments == 1:
            self.instruments = None
        self.n_samples = int(n_samples)
        self.model = str(model)
        self.sample_rate = int(sample_rate)
        self.windows = plan_windows(self.n_samples, int(core_frames), int(context_frames))
        options = DecodeOptions(float(onset_threshold), float(frame_threshold), int(min_note_frames), int(energy_tolerance),
                                bool(melodia))
        self.acc = MapAccumulator(options, with_embedding=has_embedding and self.instruments is not None,
                                  expected_frames=self.windows[-1].core_end if self.windows else 0)
        self.crops = [window_crop(w, n_frames(w.in_end - w.in_start), self.acc.crop_margin) if can_crop else (0, 0)
                      for w in self.windows]
        self.result = None

    def window_list(self) -> list[list[int]]:
        """[[in_start, in_end, core_start, core_end, crop_start, crop_end], ...] for the JS side: the
        maps of window i start at frame in_start // 512 + crop_start."""
        return [[w.in_start, w.in_end, w.core_start, w.core_end, c[0], c[1]] for w, c in zip(self.windows, self.crops)]

    def add(self, index: int, frames: int, onset, frame, embedding=None) -> None:
        """Maps of window ``index`` as flat float32 buffers: onset/frame (84 * frames), embedding
        (12 * 84 * frames) or None."""
        shape = (N_PITCHES, int(frames))
        o = _float32(onset).reshape(shape)
        f = _float32(frame).reshape(shape)
        e = None
        if embedding is not None and self.acc.with_embedding:
            e = _float32(embedding).reshape((-1,) + shape)
        window = self.windows[int(index)]
        self.acc.add(window, o, f, e, map_start=window.frame_start + self.crops[int(index)][0])

    def finish(self) -> str:
        """The Transcription JSON (as the CLI writes it, without indentation)."""
        self.result = self.acc.finish(self.model, self.sample_rate, self.n_samples / INPUT_RATE, self.instruments)
        self.acc = None   # free the maps
        return json.dumps({**self.result.to_dict(), "warnings": self.result.warnings})

    def midi(self) -> bytes:
        return midi_bytes(self.result)


def _float32(buf) -> np.ndarray:
    """A Float32Array from JS (a JsProxy: copied into Python memory once) or any buffer -> ndarray."""
    if hasattr(buf, "to_py"):
        buf = buf.to_py()
    return np.frombuffer(buf, dtype=np.float32)
