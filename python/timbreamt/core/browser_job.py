"""The Python half of the browser worker (numpy only, runs in Pyodide).

The worker (web/worker.js) resamples the decoded audio with core/resample.py (the CLI's resampler),
runs the ONNX graph with onnxruntime-web on the windows planned here, hands each window's maps to
``BrowserJob.add`` and gets the Transcription JSON and MIDI bytes from here, so the page decodes and
clusters with the very code the CLI uses. After a Septimbre run the job keeps the notes and their
embeddings, so ``regroup`` splits them into another number of instruments without the model.
"""
from __future__ import annotations

import json

import numpy as np

from . import constants as C
from .constants import CONTEXT_FRAMES, CORE_FRAMES, GRAPH_SAMPLE_RATE, N_PITCHES
from .contract import decode_options, resolve_instruments
from .midi import csv_text
from .pipeline import MapAccumulator, assign_tracks, build_transcription
from .resample import StreamResampler, output_length
from .transcription import Transcription
from .windows import n_frames, plan_windows, window_crop
from .midi import midi_bytes


class BrowserJob:
    """One transcription: plan windows for ``n_samples`` at 44.1 kHz, accumulate, finish."""

    def __init__(self, n_samples: int, model: str, has_embedding: bool, instruments, sample_rate: int,
                 metadata: dict | None = None, onset_threshold: float | None = None,
                 frame_threshold: float | None = None, min_note_frames: int | None = None,
                 melodia: bool | None = None, core_frames: int = CORE_FRAMES, context_frames: int = CONTEXT_FRAMES,
                 can_crop: bool = False, keep_embeddings: bool = False) -> None:
        """metadata: the graph's metadata_props (read_metadata); the decoding options default to it
        exactly as in the CLI (contract.decode_options). can_crop: the graph takes a ``crop`` input
        (frames skipped before its convolutions); the worker then feeds each window's crop from
        ``window_list``. keep_embeddings: pool note embeddings even for one track, so that ``regroup``
        can split the notes later (Septimbre only)."""
        if int(n_samples) <= 0:
            raise ValueError("audio is empty (0 samples)")
        self.instruments = resolve_instruments(instruments, has_embedding, str(model))
        options = decode_options(metadata or {}, has_embedding, onset_threshold, frame_threshold,
                                 min_note_frames=None if min_note_frames is None else int(min_note_frames),
                                 melodia=None if melodia is None else bool(melodia))
        self.count_model = options.count_model
        self.n_samples = int(n_samples)
        self.model = str(model)
        self.sample_rate = int(sample_rate)
        self.windows = plan_windows(self.n_samples, int(core_frames), int(context_frames))
        pool = has_embedding and (self.instruments is not None or bool(keep_embeddings))
        self.acc = MapAccumulator(options, with_embedding=pool,
                                  expected_frames=self.windows[-1].core_end if self.windows else 0)
        self.crops = [window_crop(w, n_frames(w.in_end - w.in_start), self.acc.crop_margin) if can_crop else (0, 0)
                      for w in self.windows]
        self.result = None
        self.events = None
        self.note_emb = None
        self.auto_instruments = None

    def window_list(self) -> list[list[int]]:
        """[[in_start, in_end, core_start, core_end, crop_start, crop_end], ...] for the JS side: the
        maps of window i start at frame in_start // GRAPH_HOP + crop_start."""
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
        """The Transcription JSON (as the CLI writes it, without indentation), with ``warnings`` and,
        when the notes can be regrouped, ``auto_instruments`` (the estimate, when it was computed)."""
        acc = self.acc
        self.events = acc.decode()
        if acc.with_embedding:
            self.note_emb = acc.note_embeddings(self.events)
        self.acc = None   # free the maps
        return self.regroup(self.instruments)

    def regroup(self, instruments) -> str:
        """The notes of the finished job split into ``instruments`` tracks (as for the constructor),
        without running the model again: the same clustering the CLI runs after decoding."""
        if self.events is None:
            raise ValueError("finish() the job before regrouping it")
        k_asked = resolve_instruments(instruments, self.note_emb is not None, self.model)
        labels, k, warnings = assign_tracks(self.events, self.note_emb, k_asked, self.count_model)
        if k_asked == "auto":
            self.auto_instruments = k
        self.instruments = k_asked
        self.result = build_transcription(self.model, self.sample_rate, self.n_samples / GRAPH_SAMPLE_RATE,
                                          self.events, labels, k, warnings)
        extra = {"warnings": self.result.warnings, "regroupable": self.note_emb is not None}
        if self.auto_instruments is not None:
            extra["auto_instruments"] = self.auto_instruments
        return json.dumps({**self.result.to_dict(), **extra})

    def midi(self) -> bytes:
        return midi_bytes(self.result)


def export_files(transcription_json: str, programs=None) -> dict:
    """MIDI bytes and CSV text of a transcription as the page shows it (tracks renamed by the user,
    a GM program per track), written by the CLI's renderers."""
    result = Transcription.from_json(str(transcription_json))
    progs = None if programs is None else [int(p) for p in (programs.to_py() if hasattr(programs, "to_py") else programs)]
    if progs is not None and any(not 0 <= p <= 127 for p in progs):
        raise ValueError(f"GM programs are 0..127, got {progs}")
    return {"midi": midi_bytes(result, progs), "csv": csv_text(result)}


class BrowserResampler:
    """core/resample.py for the worker: blocks of the decoded file (any rate) -> 44.1 kHz blocks."""

    def __init__(self, in_rate: int) -> None:
        self.stream = StreamResampler(int(in_rate), GRAPH_SAMPLE_RATE)

    def process(self, block) -> np.ndarray:
        return self.stream.process(_float32(block))

    def flush(self) -> np.ndarray:
        return self.stream.flush()


def graph_samples(n_samples: int, in_rate: int) -> int:
    """Samples at the graph's rate that ``n_samples`` at ``in_rate`` become (what BrowserJob plans for)."""
    return output_length(int(n_samples), int(in_rate), GRAPH_SAMPLE_RATE)


def _float32(buf) -> np.ndarray:
    """A Float32Array from JS (a JsProxy: copied into Python memory once) or any buffer -> ndarray."""
    if hasattr(buf, "to_py"):
        buf = buf.to_py()
    return np.frombuffer(buf, dtype=np.float32)


def browser_constants() -> dict:
    """The numbers the JS side needs (read once by the worker), so none is written twice."""
    return {"GRAPH_SAMPLE_RATE": C.GRAPH_SAMPLE_RATE, "GRAPH_HOP": C.GRAPH_HOP, "N_PITCHES": C.N_PITCHES,
            "MIDI_MIN": C.MIDI_MIN, "MIDI_MAX": C.MIDI_MAX, "EMBEDDING_DIM": C.EMBEDDING_DIM,
            "MAX_INSTRUMENTS": C.MAX_INSTRUMENTS, "CROP_INPUT": C.CROP_INPUT, "HOP_SECONDS": C.HOP_SECONDS,
            "FRAMES_PER_SECOND": C.FRAMES_PER_SECOND}
