import numpy as np
import pytest

from timbreamt import cluster


def groups(k, per, dim=12, spread=0.25, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.standard_normal((dim, dim)))[0][:k]
    labels = np.repeat(np.arange(k), per)
    rng.shuffle(labels)
    e = centres[labels] + spread * rng.standard_normal((len(labels), dim)) / np.sqrt(dim)
    return e / np.linalg.norm(e, axis=1, keepdims=True), labels


def same_partition(a, b):
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("k", [2, 3, 4])
def test_recovers_known_groups(k):
    e, labels = groups(k, 30)
    assert same_partition(cluster.spectral_labels(e, k), labels)


def test_deterministic_and_canonical():
    e, _ = groups(3, 25, seed=5)
    a = cluster.spectral_labels(e, 3)
    b = cluster.spectral_labels(e.copy(), 3)
    assert np.array_equal(a, b)
    assert a[0] == 0 and set(a.tolist()) == {0, 1, 2}


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_estimate_k(k):
    e, _ = groups(k, 25, seed=k)
    assert cluster.estimate_k(e) == k


def test_large_inputs_use_a_subset_and_stay_correct():
    e, labels = groups(3, 1500, seed=2)
    assert same_partition(cluster.spectral_labels(e, 3, max_notes=300), labels)


def test_more_clusters_than_notes_and_empty():
    e, _ = groups(2, 1)
    assert sorted(cluster.spectral_labels(e, 5).tolist()) == [0, 1]
    assert len(cluster.spectral_labels(np.zeros((0, 12)), 3)) == 0
    with pytest.raises(ValueError):
        cluster.spectral_labels(e, 0)


def test_note_embeddings_weighted_mean():
    # two notes on pitch rows 0 and 1; cells keyed frame * 84 + row
    keys = np.array([0 * 84 + 0, 1 * 84 + 0, 1 * 84 + 1, 2 * 84 + 1])
    emb = np.array([[1, 0], [0, 1], [1, 0], [1, 0]], float)
    w = np.array([1.0, 3.0, 1.0, 1.0])
    out = cluster.note_embeddings(keys, emb, w, starts=np.array([0, 1]), ends=np.array([2, 3]), rows=np.array([0, 1]))
    want0 = np.array([1, 3]) / np.linalg.norm([1, 3])
    assert np.allclose(out[0], want0)
    assert np.allclose(out[1], [1, 0])
    with pytest.raises(ValueError, match="increasing"):
        cluster.note_embeddings(keys[::-1], emb, w, np.array([0]), np.array([1]), np.array([0]))


def test_pivot_columns_matches_qr_pivoting_choice():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((3, 40))
    piv = cluster._pivot_columns(m, 3)
    # the first pivot is the column of largest norm
    assert piv[0] == np.argmax((m ** 2).sum(0))
    assert len(set(piv.tolist())) == 3


def test_estimate_k_on_many_notes_uses_a_bounded_subset(monkeypatch):
    e, _ = groups(3, 2000, seed=9)
    seen = []
    real = cluster.affinity
    monkeypatch.setattr(cluster, "affinity", lambda x, t=1.0: (seen.append(len(x)), real(x, t))[1])
    assert cluster.estimate_k(e) == 3
    assert max(seen) <= cluster.MAX_SPECTRAL_NOTES
