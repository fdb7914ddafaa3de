"""Spotify's basic-pitch as a peer: its shipped ONNX graph (pip install --no-deps basic-pitch), run on
its own 2 s windows, decoded by the same Basic Pitch style decoder as ours.

Kept apart from evaluate.py, and importing nothing heavy, so that `timbreamt bench` charges the peer's
start-up with onnxruntime and its model alone (not with our evaluation's mir_eval and scipy)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

BP_WINDOW = 43844
BP_OVERLAP_FRAMES = 30
BP_FRAMES_PER_WINDOW = 172


def basic_pitch_model_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("basic_pitch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("basic-pitch is not installed (pip install --no-deps basic-pitch==0.4.0)")
    return Path(list(spec.submodule_search_locations)[0]) / "saved_models" / "icassp_2022" / "nmp.onnx"


class BasicPitch:
    """basic-pitch's ONNX model with its windowing; notes in seconds."""

    def __init__(self, threads: int = 2) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(basic_pitch_model_path()), so, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def transcribe(self, audio_22k: np.ndarray, onset_threshold: float = 0.5, frame_threshold: float = 0.3,
                   min_note_frames: int = 11) -> np.ndarray:
        """audio (n,) float32 at 22050 Hz -> notes (k, 3) rows (start_s, end_s, pitch)."""
        from ..core.notes import decode_notes

        overlap = BP_OVERLAP_FRAMES * 256
        hop = BP_WINDOW - overlap
        padded = np.concatenate([np.zeros(overlap // 2, np.float32), audio_22k.astype(np.float32)])
        n_olap = BP_OVERLAP_FRAMES // 2
        keep = BP_FRAMES_PER_WINDOW - 2 * n_olap
        notes_parts, onsets_parts = [], []
        for start in range(0, len(padded), hop):
            window = padded[start:start + BP_WINDOW]
            window = np.pad(window, (0, BP_WINDOW - len(window)))
            out = self.session.run(["StatefulPartitionedCall:1", "StatefulPartitionedCall:2"],
                                   {self.input: window[None, :, None]})
            notes_parts.append(out[0][0, n_olap:-n_olap])
            onsets_parts.append(out[1][0, n_olap:-n_olap])
        n_frames = int(np.floor(len(audio_22k) * (22050 // 256) / 22050))
        frame = np.concatenate(notes_parts)[:n_frames].T[3:87]     # MIDI 21..108 -> 24..107
        onset = np.concatenate(onsets_parts)[:n_frames].T[3:87]
        ev = decode_notes(np.ascontiguousarray(onset), np.ascontiguousarray(frame), onset_threshold,
                          frame_threshold, min_note_frames, 11)
        if not len(ev):
            return np.zeros((0, 3))

        def seconds(j):   # exact time of unwrapped frame j: its window's start plus its local frame
            w, local = np.divmod(j, keep)
            return (w * hop + (local + n_olap) * 256 - overlap // 2) / 22050.0
        return np.stack([seconds(ev["start"]), seconds(ev["end"]), ev["pitch"]], axis=1).astype(np.float64)
