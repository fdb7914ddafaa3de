import numpy as np
import pytest

mir_eval = pytest.importorskip("mir_eval")

from timbreamt.evaluate import note_scores  # noqa: E402


def test_note_scores_match_mir_eval_by_hand():
    ref = np.array([[0.0, 0.5, 60], [0.5, 1.0, 64], [1.0, 2.0, 67]])
    est = np.array([[0.02, 0.5, 60], [0.58, 1.0, 64], [1.0, 1.3, 67], [1.0, 2.0, 70]])
    s = note_scores(ref, est)
    # 60 within 50 ms; 64 80 ms late: miss; 67 hit; 70 wrong pitch -> 2 of 3 recalled, 2 of 4 precise
    assert s["recall"] == pytest.approx(2 / 3) and s["precision"] == pytest.approx(0.5)
    assert s["f1"] == pytest.approx(2 * (2 / 3 * 0.5) / (2 / 3 + 0.5))
    assert note_scores(ref, est, with_offsets=True)["recall"] == pytest.approx(1 / 3)


def test_empty_cases_and_validation():
    assert note_scores(np.zeros((0, 3)), np.zeros((0, 3)))["f1"] == 1.0
    assert note_scores(np.array([[0, 1, 60]]), np.zeros((0, 3)))["f1"] == 0.0
    with pytest.raises(ValueError, match="shape"):
        note_scores(np.zeros((2, 2)), np.zeros((0, 3)))


def test_multi_instrument_assignment_on_hand_made_tracks():
    from timbreamt.evaluate import multi_instrument_scores

    a = np.array([[0.0, 0.5, 60], [1.0, 1.5, 62], [2.0, 2.5, 64]])
    b = np.array([[0.0, 0.5, 48], [1.0, 1.5, 50]])
    # tracks swapped in order, and one note of part a put into b's track
    tracks = [b.copy(), a[:2].copy()]
    tracks[0] = np.vstack([tracks[0], a[2:]])
    s = multi_instrument_scores([a, b], tracks)
    f1_a = 2 * (2 / 3 * 1.0) / (2 / 3 + 1.0)            # a's track: 2 of 3 notes, all precise
    f1_b = 2 * (1.0 * 2 / 3) / (1.0 + 2 / 3)            # b's track: both notes, plus one stray
    assert s["multi_f1"] == pytest.approx((f1_a + f1_b) / 2)
    assert s["assignment_accuracy"] == pytest.approx(4 / 5)
    perfect = multi_instrument_scores([a, b], [a, b])
    assert perfect == {"multi_f1": 1.0, "assignment_accuracy": 1.0}
    one_track = multi_instrument_scores([a, b], [np.vstack([a, b])])
    assert one_track["multi_f1"] < 0.5


def test_midi_parts_reads_reference_tracks():
    from conftest import REFERENCE
    from timbreamt.evaluate import midi_parts

    parts = midi_parts(REFERENCE / "three_mix.mid")
    assert [len(p) for p in parts] == [7, 9, 7]
    assert all((p[:, 1] > p[:, 0]).all() for p in parts)
