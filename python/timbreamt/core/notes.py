"""Onset/frame probability maps -> note events (numpy only: this module also runs in Pyodide).

Basic Pitch style polyphonic decoding:
1. onsets are the local maxima in time of the onset map, plus onsets inferred from rises of the frame
   map (so a note whose onset head missed it still starts), above ``onset_threshold``;
2. from each onset, latest first, a note runs while the frame map stays above ``frame_threshold``,
   tolerating dips of fewer than ``energy_tolerance`` frames; it is kept if longer than
   ``min_note_frames``; its cells (and the neighbouring semitones') are then consumed;
3. a "melodia" pass adds notes grown both ways from the strongest unconsumed frame activity.
Unlike Basic Pitch, inferred onsets are not rescaled by global maxima: every step but the greedy
order is local in time, so maps stitched from chunks decode exactly like whole-file maps.

Maps are (84, frames) arrays, row r = MIDI pitch 24 + r; frame i is centred at i * hop_seconds.
"""
from __future__ import annotations

import numpy as np

from .constants import MIDI_MIN, N_PITCHES

# note event columns: start_frame, end_frame (exclusive), midi_pitch, amplitude
NOTE_DTYPE = np.dtype([("start", np.int64), ("end", np.int64), ("pitch", np.int64), ("amplitude", np.float64)])


def _validate_maps(onset_probs: np.ndarray, frame_probs: np.ndarray) -> None:
    for name, m in (("onset_probs", onset_probs), ("frame_probs", frame_probs)):
        if not isinstance(m, np.ndarray) or m.ndim != 2 or m.shape[0] != N_PITCHES:
            raise ValueError(f"{name} must be a numpy array of shape ({N_PITCHES}, frames), got "
                             f"{getattr(m, 'shape', type(m).__name__)}")
        if m.size and not np.isfinite(m).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    if onset_probs.shape != frame_probs.shape:
        raise ValueError(f"onset_probs {onset_probs.shape} and frame_probs {frame_probs.shape} differ in shape")


def validate_decoding(onset_threshold: float, frame_threshold: float, min_note_frames: int,
                         energy_tolerance: int) -> None:
    """Raise ValueError naming the first decoding option out of its range (NaN and inf included)."""
    for name, v in (("onset_threshold", onset_threshold), ("frame_threshold", frame_threshold)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not 0.0 < float(v) < 1.0:
            raise ValueError(f"{name} must be a number between 0 and 1 (exclusive), got {v!r}")
    for name, v in (("min_note_frames", min_note_frames), ("energy_tolerance", energy_tolerance)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {v!r}")


def inferred_onsets(onset_probs: np.ndarray, frame_probs: np.ndarray, n_diff: int = 2) -> np.ndarray:
    """max(onset, rise of frame prob over the last 1..n_diff frames (the smallest of them)), (84, T).

    Frames before the first count as silent: a note already sounding when the audio starts rises
    from 0 there (the onset map alone may not mark it: it has no attack to see)."""
    frames = frame_probs.astype(np.float32, copy=False)
    rise = np.full(frames.shape, np.inf, dtype=np.float32)
    for n in range(1, n_diff + 1):
        prev = np.zeros_like(frames)
        prev[:, n:] = frames[:, :-n]
        np.minimum(rise, frames - prev, out=rise)
    np.maximum(rise, 0, out=rise)
    return np.maximum(onset_probs.astype(np.float32, copy=False), rise)


def onset_peaks(onset_probs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(pitch_rows, frames) of strict local maxima in time above ``threshold``, sorted by frame then
    row. The first frame can be a peak (it is compared with silence before the audio), the last
    cannot (what follows is unknown)."""
    o = onset_probs
    if o.shape[1] < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    before = np.concatenate([np.zeros_like(o[:, :1]), o[:, :-2]], axis=1)
    mid = o[:, :-1]
    is_peak = (mid > before) & (mid > o[:, 1:]) & (mid >= threshold)
    t, r = np.nonzero(is_peak.T)
    return r.astype(np.int64), t.astype(np.int64)


def _walk(remaining: np.ndarray, row: int, start: int, stop: int, step: int, threshold: float,
          tolerance: int, consume: bool) -> int:
    """Walk from ``start`` by ``step`` until ``tolerance`` consecutive frames are below ``threshold``
    or ``stop`` is reached; return the index one past the last frame above threshold (in walk order).
    With ``consume`` the visited cells (and the neighbouring rows) are zeroed as in Basic Pitch."""
    i, below = start, 0
    n_rows = remaining.shape[0]
    while (i < stop if step > 0 else i > stop) and below < tolerance:
        below = below + 1 if remaining[row, i] < threshold else 0
        if consume:
            remaining[row, i] = 0
            if row + 1 < n_rows:
                remaining[row + 1, i] = 0
            if row > 0:
                remaining[row - 1, i] = 0
        i += step
    return i - step * below


def decode_notes(onset_probs: np.ndarray, frame_probs: np.ndarray, onset_threshold: float = 0.5,
                 frame_threshold: float = 0.3, min_note_frames: int = 6, energy_tolerance: int = 11,
                 infer_onsets: bool = True, melodia: bool = True) -> np.ndarray:
    """Decode note events from probability maps.

    Parameters: onset_probs, frame_probs: float arrays (84, frames) in [0, 1]. Thresholds in (0, 1);
    min_note_frames, energy_tolerance in frames.
    Returns a structured array of NOTE_DTYPE (start, end: frame indices, end exclusive; pitch: MIDI;
    amplitude: mean frame probability over the note), sorted by (start, pitch).
    """
    _validate_maps(onset_probs, frame_probs)
    validate_decoding(onset_threshold, frame_threshold, min_note_frames, energy_tolerance)
    onsets = inferred_onsets(onset_probs, frame_probs) if infer_onsets else onset_probs
    rows, starts = onset_peaks(onsets, onset_threshold)
    return decode_from_peaks(rows, starts, frame_probs, frame_threshold, min_note_frames, energy_tolerance,
                             melodia)


def decode_from_peaks(rows: np.ndarray, starts: np.ndarray, frame_probs: np.ndarray, frame_threshold: float,
                      min_note_frames: int, energy_tolerance: int, melodia: bool = True) -> np.ndarray:
    """Notes from onset peaks (rows, frames; sorted by frame then row) and the frame map (84, T) of any
    float dtype (the runtime keeps it as float16). See decode_notes for the output."""
    n_frames = frame_probs.shape[1]
    frames = frame_probs
    remaining = frames.copy()
    events = []
    # latest onsets first, as Basic Pitch: a repeated note is cut at the next onset of its pitch
    for row, start in zip(np.asarray(rows)[::-1].tolist(), np.asarray(starts)[::-1].tolist()):
        if start >= n_frames - 1:
            continue
        end = _walk(remaining, row, start + 1, n_frames - 1, 1, frame_threshold, energy_tolerance, False)
        if end - start <= min_note_frames:
            continue
        lo, hi = max(row - 1, 0), min(row + 2, N_PITCHES)
        remaining[lo:hi, start:end] = 0
        events.append((start, end, row + MIDI_MIN, float(frames[row, start:end].mean(dtype=np.float64))))
    if melodia:
        events.extend(_melodia(remaining, frames, frame_threshold, min_note_frames, energy_tolerance))
    out = np.array(events, dtype=NOTE_DTYPE)
    return np.sort(out, order=("start", "pitch", "end"))


def _melodia(remaining: np.ndarray, frames: np.ndarray, frame_threshold: float, min_note_frames: int,
             energy_tolerance: int) -> list[tuple[int, int, int, float]]:
    """Notes grown both ways from the strongest unconsumed cells, strongest first.

    Cells only ever drop to 0, so visiting the cells above threshold once in descending order of
    their value is the same as repeatedly taking the argmax of the remaining map (but O(K log K)).
    Ties are broken by flat index (row-major), as argmax would.
    """
    n_frames = frames.shape[1]
    flat = remaining.ravel()
    cand = np.flatnonzero(flat > frame_threshold)
    order = cand[np.lexsort((cand, -flat[cand]))]
    events = []
    for idx in order.tolist():
        row, mid = divmod(idx, n_frames)
        if remaining[row, mid] <= frame_threshold:   # consumed (zeroed) since the list was made
            continue
        remaining[row, mid] = 0
        end = _walk(remaining, row, mid + 1, n_frames - 1, 1, frame_threshold, energy_tolerance, True)
        start = _walk(remaining, row, mid - 1, 0, -1, frame_threshold, energy_tolerance, True) + 1
        # _walk returns one step past the last active frame in walk direction: +1 makes it inclusive
        end_excl = end
        if end_excl - start <= min_note_frames:
            continue
        events.append((start, end_excl, row + MIDI_MIN, float(frames[row, start:end_excl].mean(dtype=np.float64))))
    return events


def velocity_from_amplitude(amplitude: np.ndarray) -> np.ndarray:
    """MIDI velocity 1..127 from mean frame probability (linear, as Basic Pitch)."""
    a = np.clip(np.asarray(amplitude, dtype=np.float64), 0.0, 1.0)
    return np.clip(np.round(127 * a), 1, 127).astype(np.int64)
