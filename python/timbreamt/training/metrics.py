"""Metrics (mir_eval): note scores, frame scores, multi-instrument scores by best assignment, and the
calibration of decoding thresholds on validation maps.

Notes are (n, 3) arrays of (start_s, end_s, midi_pitch)."""
from __future__ import annotations

import mir_eval
import numpy as np
from scipy.optimize import linear_sum_assignment

from ..core import constants as C
from ..core.notes import decode_notes

FRAME_HOP_SECONDS = 0.01


def _as_notes(notes: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(notes, dtype=np.float64)
    if a.ndim != 2 or (a.size and a.shape[1] != 3):
        raise ValueError(f"{name} must have shape (n, 3) rows of (start_s, end_s, midi_pitch), got {a.shape}")
    return a.reshape(-1, 3)


def _mir_eval_notes(ref: np.ndarray, est: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ref_intervals, ref_hz, est_intervals, est_hz) as mir_eval wants them: strictly positive
    durations (a zero-length note gets 1 ms) and pitches in Hz."""
    def hz(p: np.ndarray) -> np.ndarray:
        return 440.0 * 2 ** ((p - 69) / 12)

    ref_iv, est_iv = ref[:, :2].copy(), est[:, :2].copy()
    ref_iv[:, 1] = np.maximum(ref_iv[:, 1], ref_iv[:, 0] + 1e-3)
    est_iv[:, 1] = np.maximum(est_iv[:, 1], est_iv[:, 0] + 1e-3)
    return ref_iv, hz(ref[:, 2]), est_iv, hz(est[:, 2])


def note_scores(ref: np.ndarray, est: np.ndarray, onset_tolerance: float = 0.05,
                with_offsets: bool = False) -> dict[str, float]:
    """mir_eval transcription precision/recall/F1.

    ref, est: (n, 3) rows of (start_s, end_s, midi_pitch). Onset tolerance in seconds; with_offsets
    adds mir_eval's offset criterion (20% of the note length or 50 ms).
    Empty reference and empty estimate score 1.0; one of them empty scores 0.0.
    """
    ref, est = _as_notes(ref, "ref"), _as_notes(est, "est")
    if len(ref) == 0 or len(est) == 0:
        v = 1.0 if len(ref) == len(est) else 0.0
        return {"precision": v, "recall": v, "f1": v}
    p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
        *_mir_eval_notes(ref, est), onset_tolerance=onset_tolerance, offset_ratio=0.2 if with_offsets else None)
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


def decode_to_intervals(onset: np.ndarray, frame: np.ndarray, onset_threshold: float, frame_threshold: float,
                        min_note_frames: int = 6, hop_seconds: float | None = None, melodia: bool = True) -> np.ndarray:
    """Decode maps (84, T) into (n, 3) rows of (start_s, end_s, midi_pitch)."""
    hop = C.HOP_SECONDS if hop_seconds is None else hop_seconds
    ev = decode_notes(onset, frame, onset_threshold, frame_threshold, min_note_frames, C.ENERGY_TOLERANCE,
                      melodia=melodia)
    if not len(ev):
        return np.zeros((0, 3))
    return np.stack([ev["start"] * hop, ev["end"] * hop, ev["pitch"]], axis=1).astype(np.float64)


def calibrate_thresholds(maps: list[tuple[np.ndarray, np.ndarray]], refs: list[np.ndarray],
                         onset_grid: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
                         frame_grid: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
                         melodia_grid: tuple[bool, ...] = (True, False)) -> dict:
    """Grid-search the decoding (onset and frame thresholds, melodia pass on/off) maximising mean
    note F1 over validation clips.

    maps: [(onset, frame)] each (84, T); refs: [(n, 3) rows of (start_s, end_s, pitch)].
    Returns {'onset_threshold', 'frame_threshold', 'melodia', 'note_f1'} (the first best in grid order).
    """
    if len(maps) != len(refs) or not maps:
        raise ValueError("calibration needs as many reference note lists as maps, and at least one")
    if not (onset_grid and frame_grid and melodia_grid):
        raise ValueError("calibration grids must not be empty")
    best = {"note_f1": -1.0}
    for melodia in melodia_grid:
        for ot in onset_grid:
            for ft in frame_grid:
                f1 = float(np.mean([note_scores(r, decode_to_intervals(o, f, ot, ft, melodia=melodia))["f1"]
                                    for (o, f), r in zip(maps, refs)]))
                if f1 > best["note_f1"]:
                    best = {"onset_threshold": ot, "frame_threshold": ft, "melodia": bool(melodia), "note_f1": f1}
    return best


def multi_instrument_scores(ref_parts: list[np.ndarray], tracks: list[np.ndarray], onset_tolerance: float = 0.05) -> dict[str, float]:
    """Tracks matched to reference parts by the assignment maximising total note F1.

    ref_parts, tracks: lists of (n, 3) arrays of (start_s, end_s, midi_pitch). Returns the mean note F1
    over parts (a part left without a track scores 0) and the assignment accuracy: the share of matched
    (correctly transcribed) notes that sit in the track assigned to their part.
    """
    if not ref_parts:
        raise ValueError("no reference parts")
    f1 = np.zeros((len(ref_parts), max(len(tracks), 1)))
    for i, part in enumerate(ref_parts):
        for j, track in enumerate(tracks):
            f1[i, j] = note_scores(part, track, onset_tolerance)["f1"]
    rows, cols = linear_sum_assignment(-f1)
    per_part = np.zeros(len(ref_parts))
    per_part[rows] = f1[rows, cols]
    # assignment accuracy: among reference notes found in any track, the share found in the right one
    right = total = 0
    assigned = dict(zip(rows.tolist(), cols.tolist()))
    for i, part in enumerate(ref_parts):
        for j, track in enumerate(tracks):
            hits = _matched_ref_count(part, track, onset_tolerance)
            total += hits
            if assigned.get(i) == j:
                right += hits
    return {"multi_f1": float(per_part.mean()), "assignment_accuracy": float(right / total) if total else 0.0}


def _matched_ref_count(ref: np.ndarray, est: np.ndarray, onset_tolerance: float) -> int:
    ref, est = _as_notes(ref, "ref"), _as_notes(est, "est")
    if not len(ref) or not len(est):
        return 0
    return len(mir_eval.transcription.match_notes(*_mir_eval_notes(ref, est), onset_tolerance=onset_tolerance,
                                                  offset_ratio=None))


def frame_scores(ref: np.ndarray, est: np.ndarray, hop_seconds: float = FRAME_HOP_SECONDS) -> dict[str, float]:
    """Frame-level precision/recall/F1 of two note lists rasterised on a (pitch, time) grid.

    ref, est: (n, 3) rows of (start_s, end_s, midi_pitch); a cell is active when a note covers its
    time (grid of ``hop_seconds``). Both empty score 1.0; one empty scores 0.0.
    """
    ref, est = _as_notes(ref, "ref"), _as_notes(est, "est")
    if hop_seconds <= 0:
        raise ValueError(f"hop_seconds must be positive, got {hop_seconds}")
    if len(ref) == 0 or len(est) == 0:
        v = 1.0 if len(ref) == len(est) else 0.0
        return {"precision": v, "recall": v, "f1": v}
    n_frames = int(np.ceil(max(ref[:, 1].max(), est[:, 1].max()) / hop_seconds)) + 1

    def roll(notes: np.ndarray) -> np.ndarray:
        r = np.zeros((128, n_frames), dtype=bool)
        for start, end, pitch in notes:
            r[int(round(pitch)), int(round(start / hop_seconds)):max(int(round(end / hop_seconds)),
                                                                    int(round(start / hop_seconds)) + 1)] = True
        return r

    r, e = roll(ref), roll(est)
    tp = float((r & e).sum())
    p = tp / max(e.sum(), 1)
    rec = tp / max(r.sum(), 1)
    return {"precision": p, "recall": rec, "f1": 2 * p * rec / (p + rec) if p + rec > 0 else 0.0}
