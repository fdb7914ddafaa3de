import numpy as np
import pytest

from timbreamt.core import notes


def blank(frames=200):
    return np.zeros((84, frames), np.float32), np.zeros((84, frames), np.float32)


def put_note(onset, frame, row, start, end, level=0.9):
    frame[row, start:end] = level
    onset[row, start] = 0.95


def test_single_note_decoded_with_frames_and_amplitude():
    onset, frame = blank()
    put_note(onset, frame, 36, 20, 60, 0.8)
    ev = notes.decode_notes(onset, frame)
    assert len(ev) == 1
    assert (ev["start"][0], ev["end"][0], ev["pitch"][0]) == (20, 60, 60)
    assert ev["amplitude"][0] == pytest.approx(0.8)


def test_short_dips_are_tolerated_long_gaps_split():
    onset, frame = blank(300)
    put_note(onset, frame, 10, 10, 100, level=0.5)
    frame[10, 50:55] = 0.25                         # 5-frame dip < tolerance 11, small rise: one note
    put_note(onset, frame, 20, 10, 60)
    put_note(onset, frame, 20, 100, 150)            # separate onset after a 40-frame gap
    ev = notes.decode_notes(onset, frame)
    by_pitch = {int(p): [(int(s), int(e)) for s, e, q in zip(ev["start"], ev["end"], ev["pitch"]) if q == p]
                for p in set(ev["pitch"].tolist())}
    assert by_pitch[34] == [(10, 100)]
    assert by_pitch[44] == [(10, 60), (100, 150)]


def test_min_length_and_thresholds():
    onset, frame = blank()
    put_note(onset, frame, 5, 10, 14)               # 4 frames: too short
    put_note(onset, frame, 6, 50, 90, level=0.2)    # below the frame threshold 0.3
    assert len(notes.decode_notes(onset, frame)) == 0
    assert len(notes.decode_notes(onset, frame, frame_threshold=0.1)) == 1


def test_inferred_onset_from_frame_rise_starts_a_note():
    onset, frame = blank()
    frame[40, 30:80] = 0.9                          # no onset activation at all
    ev = notes.decode_notes(onset, frame, melodia=False)
    assert [(int(e["start"]), int(e["pitch"])) for e in ev] == [(30, 64)]
    assert len(notes.decode_notes(onset, frame, infer_onsets=False, melodia=False)) == 0


def test_melodia_recovers_note_without_onset_peak():
    onset, frame = blank()
    frame[50, 0:70] = np.linspace(0.5, 0.9, 70)     # active from frame 0: no rise to infer
    ev = notes.decode_notes(onset, frame, infer_onsets=False)
    assert len(ev) == 1 and ev["pitch"][0] == 74
    assert ev["start"][0] <= 2 and ev["end"][0] >= 68


def naive_melodia(remaining, frames, thr, min_len, tol):
    """Basic Pitch's definition: repeatedly the argmax of the remaining map."""
    out = []
    n = frames.shape[1]
    while remaining.max() > thr:
        row, mid = np.unravel_index(np.argmax(remaining), remaining.shape)
        remaining[row, mid] = 0
        end = notes._walk(remaining, row, mid + 1, n - 1, 1, thr, tol, True)
        start = notes._walk(remaining, row, mid - 1, 0, -1, thr, tol, True) + 1
        if end - start > min_len:
            out.append((start, end, row + 24))
    return out


def test_sorted_melodia_equals_repeated_argmax():
    rng = np.random.default_rng(3)
    frames = rng.uniform(0, 1, (84, 120)).astype(np.float32) ** 3
    a = frames.copy()
    b = frames.copy()
    fast = [(s, e, p) for s, e, p, _ in notes._melodia(a, frames, 0.3, 3, 4)]
    assert fast == naive_melodia(b, frames, 0.3, 3, 4)
    assert np.array_equal(a, b)


def test_float16_maps_decode_like_float32_rounded():
    rng = np.random.default_rng(4)
    onset = rng.uniform(0, 1, (84, 300)).astype(np.float32) ** 4
    frame = rng.uniform(0, 1, (84, 300)).astype(np.float32) ** 2
    o16, f16 = onset.astype(np.float16), frame.astype(np.float16)
    r1, t1 = notes.onset_peaks(notes.inferred_onsets(o16, f16), 0.5)
    a = notes.decode_from_peaks(r1, t1, f16, 0.3, 6, 11)
    b = notes.decode_notes(o16.astype(np.float32), f16.astype(np.float32))
    assert np.array_equal(a[["start", "end", "pitch"]], b[["start", "end", "pitch"]])


def test_validation_errors():
    onset, frame = blank()
    with pytest.raises(ValueError, match="shape"):
        notes.decode_notes(onset[:80], frame[:80])
    with pytest.raises(ValueError, match="differ"):
        notes.decode_notes(onset, frame[:, :10])
    bad = frame.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        notes.decode_notes(onset, bad)
    with pytest.raises(ValueError, match="onset_threshold"):
        notes.decode_notes(onset, frame, onset_threshold=1.5)
    with pytest.raises(ValueError, match="min_note_frames"):
        notes.decode_notes(onset, frame, min_note_frames=0)


def test_empty_and_tiny_maps():
    for n in (0, 1, 2):
        onset, frame = blank(n)
        assert len(notes.decode_notes(onset, frame)) == 0


def test_velocity_mapping():
    v = notes.velocity_from_amplitude(np.array([0.0, 0.5, 1.0, 2.0]))
    assert v.tolist() == [1, 64, 127, 127]


def test_note_sounding_when_the_audio_starts_is_kept():
    onset = np.zeros((84, 60), np.float32)
    frame = np.zeros((84, 60), np.float32)
    frame[36, :30] = 0.9        # MIDI 60 already sounding at frame 0: no attack, no onset peak
    onset[40, 20], frame[40, 20:50] = 0.9, 0.9
    for melodia in (False, True):
        ev = notes.decode_notes(onset, frame, 0.5, 0.5, 6, 11, melodia=melodia)
        assert [(int(e["pitch"]), int(e["start"])) for e in ev] == [(60, 0), (64, 20)]
    rows, times = notes.onset_peaks(np.array([[0.6, 0.2, 0.1], [0.2, 0.6, 0.7]], np.float32), 0.5)
    assert rows.tolist() == [0] and times.tolist() == [0]     # the last frame is never a peak
