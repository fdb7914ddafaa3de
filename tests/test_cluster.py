import numpy as np
import pytest

from timbreamt.core import cluster


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
    # two notes on pitch rows 0 and 1; with one-frame blocks a key is frame * 84 + row
    keys = np.array([0 * 84 + 0, 1 * 84 + 0, 1 * 84 + 1, 2 * 84 + 1])
    emb = np.array([[1, 0], [0, 1], [1, 0], [1, 0]], float)
    frame_map = np.zeros((84, 3))
    frame_map[0, :2] = [0.5, 1.0]
    frame_map[1, 1:] = [0.25, 0.75]        # 0.25 is below the threshold: that cell does not count
    out = cluster.note_embeddings(keys, emb, frame_map, 0.3, starts=np.array([0, 1]), ends=np.array([2, 3]),
                                  rows=np.array([0, 1]), block_frames=1)
    assert np.allclose(out[0], np.array([0.5, 1.0]) / np.linalg.norm([0.5, 1.0]))
    assert np.allclose(out[1], [1, 0])
    with pytest.raises(ValueError, match="increasing"):
        cluster.note_embeddings(keys[::-1], emb, frame_map, 0.3, np.array([0]), np.array([1]), np.array([0]))


def test_block_pooling_equals_cell_pooling_and_batches_agree():
    from timbreamt.core.pipeline import block_embeddings

    rng = np.random.default_rng(3)
    n_frames = 203                                   # not a multiple of the 4-frame block
    per_block = rng.standard_normal((12, 84, 51))
    embedding = np.repeat(per_block, 4, axis=2)[:, :, :n_frames]      # constant over each block, as ours
    frame = rng.random((84, n_frames)) ** 3
    keys, vectors = block_embeddings(embedding, frame.astype(np.float16), 0.4, first_block=0)
    assert np.all(np.diff(keys) > 0)
    starts = rng.integers(0, 190, 300)
    ends = starts + rng.integers(1, 40, 300)
    rows = rng.integers(0, 84, 300)
    fmap = frame.astype(np.float16)
    got = cluster.note_embeddings(keys, vectors, fmap, 0.4, starts, ends, rows)
    # direct per-cell computation
    want = np.zeros((300, 12))
    for i, (s, e, r) in enumerate(zip(starts, ends, rows)):
        for t in range(s, min(e, n_frames)):
            w = float(fmap[r, t])
            if w >= 0.4:
                want[i] += w * embedding[:, r, t]
    norms = np.linalg.norm(want, axis=1, keepdims=True)
    want = np.divide(want, norms, out=np.zeros_like(want), where=norms > 0)
    assert np.abs(got - want).max() < 2e-3          # float16 storage of the block vectors
    small = cluster.note_embeddings(keys, vectors, fmap, 0.4, starts, ends, rows, max_cells_per_batch=7)
    np.testing.assert_allclose(small, got, atol=1e-12)


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


def test_faint_ghost_notes_join_groups_instead_of_forming_one():
    """Three instruments and a few faint notes whose embeddings sit apart from all of them (harmonics
    detected as notes): with N = 3 the ghosts would take a cluster of their own and merge two instruments;
    formed by the louder notes only, the groups are the instruments and the ghosts join the nearest."""
    rng = np.random.default_rng(0)
    q = np.linalg.qr(rng.standard_normal((12, 12)))[0]
    centres = [q[0], 0.7 * q[0] + np.sqrt(1 - 0.49) * q[1], q[2]]       # two instruments of one family
    labels = np.repeat([0, 1, 2], 12)
    e = np.array([centres[i] for i in labels]) + 0.3 * rng.standard_normal((36, 12)) / np.sqrt(12)
    ghosts = q[3] + 0.05 * rng.standard_normal((4, 12))
    emb = np.concatenate([e, ghosts])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    amp = np.concatenate([np.full(len(e), 0.9), np.full(4, 0.5)])
    anchors = cluster.anchor_notes(amp)
    assert anchors.tolist() == [True] * len(e) + [False] * 4
    plain = cluster.spectral_labels(emb, 3, cluster.LABEL_TEMPERATURE)
    assert len(set(plain[len(e):].tolist())) == 1 and not same_partition(plain[:len(e)], labels)
    anchored = cluster.spectral_labels(emb, 3, cluster.LABEL_TEMPERATURE, anchors=anchors)
    assert same_partition(anchored[:len(e)], labels) and set(anchored.tolist()) == {0, 1, 2}
    # fewer anchors than groups: every note forms them
    few = np.zeros(len(emb), bool)
    few[:2] = True
    assert np.array_equal(cluster.spectral_labels(emb, 3, cluster.LABEL_TEMPERATURE, anchors=few), plain)
    with pytest.raises(ValueError, match="anchors must be"):
        cluster.spectral_labels(emb, 3, anchors=anchors[:-1])
    assert cluster.anchor_notes(np.zeros(0)).shape == (0,)
