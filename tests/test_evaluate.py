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
