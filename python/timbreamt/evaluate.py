"""Metrics: mir_eval note scores, frame scores and multi-instrument scores by best assignment."""
from __future__ import annotations

import numpy as np


def _as_notes(notes: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(notes, dtype=np.float64)
    if a.ndim != 2 or (a.size and a.shape[1] != 3):
        raise ValueError(f"{name} must have shape (n, 3) rows of (start_s, end_s, midi_pitch), got {a.shape}")
    return a.reshape(-1, 3)


def note_scores(ref: np.ndarray, est: np.ndarray, onset_tolerance: float = 0.05,
                with_offsets: bool = False) -> dict[str, float]:
    """mir_eval transcription precision/recall/F1.

    ref, est: (n, 3) rows of (start_s, end_s, midi_pitch). Onset tolerance in seconds; with_offsets
    adds mir_eval's offset criterion (20% of the note length or 50 ms).
    Empty reference and empty estimate score 1.0; one of them empty scores 0.0.
    """
    import mir_eval

    ref, est = _as_notes(ref, "ref"), _as_notes(est, "est")
    if len(ref) == 0 or len(est) == 0:
        v = 1.0 if len(ref) == len(est) else 0.0
        return {"precision": v, "recall": v, "f1": v}
    def hz(p):
        return 440.0 * 2 ** ((p - 69) / 12)

    ref_iv = ref[:, :2].copy()
    est_iv = est[:, :2].copy()
    # mir_eval needs strictly positive durations
    ref_iv[:, 1] = np.maximum(ref_iv[:, 1], ref_iv[:, 0] + 1e-3)
    est_iv[:, 1] = np.maximum(est_iv[:, 1], est_iv[:, 0] + 1e-3)
    p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ref_iv, hz(ref[:, 2]), est_iv, hz(est[:, 2]), onset_tolerance=onset_tolerance,
        offset_ratio=0.2 if with_offsets else None)
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


def decode_to_intervals(onset: np.ndarray, frame: np.ndarray, onset_threshold: float, frame_threshold: float,
                        min_note_frames: int = 6, hop_seconds: float | None = None) -> np.ndarray:
    """Decode maps (84, T) into (n, 3) rows of (start_s, end_s, midi_pitch)."""
    from . import constants as C
    from .notes import decode_notes

    hop = C.HOP_SECONDS if hop_seconds is None else hop_seconds
    ev = decode_notes(onset, frame, onset_threshold, frame_threshold, min_note_frames, C.ENERGY_TOLERANCE)
    if not len(ev):
        return np.zeros((0, 3))
    return np.stack([ev["start"] * hop, ev["end"] * hop, ev["pitch"]], axis=1).astype(np.float64)


def calibrate_thresholds(maps: list[tuple[np.ndarray, np.ndarray]], refs: list[np.ndarray],
                         onset_grid: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7),
                         frame_grid: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5)) -> tuple[float, float, float]:
    """Grid-search (onset, frame) thresholds maximising mean note F1 over validation clips.

    maps: [(onset, frame)] each (84, T); refs: [(n, 3) rows of (start_s, end_s, pitch)].
    Returns (onset_threshold, frame_threshold, mean_f1).
    """
    if len(maps) != len(refs) or not maps:
        raise ValueError("calibration needs as many reference note lists as maps, and at least one")
    best = (0.5, 0.3, -1.0)
    for ot in onset_grid:
        for ft in frame_grid:
            f1 = float(np.mean([note_scores(r, decode_to_intervals(o, f, ot, ft))["f1"] for (o, f), r in zip(maps, refs)]))
            if f1 > best[2]:
                best = (ot, ft, f1)
    return best
