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


def two_registers(seed=0, per=30, spread=0.3):
    """Two instruments of one timbre (one embedding centre, e.g. two violins) in separate registers,
    playing at the same times: only the register tells them apart."""
    rng = np.random.default_rng(seed)
    centre = np.linalg.qr(rng.standard_normal((12, 12)))[0][0]
    truth = np.repeat([0, 1], per)
    e = centre + spread * rng.standard_normal((2 * per, 12)) / np.sqrt(12)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    pitches = np.where(truth == 0, rng.integers(40, 53, 2 * per), rng.integers(67, 80, 2 * per))
    return e, pitches, truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_register_splits_one_timbre_in_two_registers(seed):
    e, pitches, truth = two_registers(seed)
    assert same_partition(cluster.instrument_labels(e, pitches, 2), truth)
    # timbre alone cannot: the old grouping mixes the registers
    assert not same_partition(cluster.spectral_labels(e, 2, cluster.LABEL_TEMPERATURE), truth)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_instrument_labels_keep_timbre_groups_across_registers(k):
    """Distinct timbres spanning the same register are still grouped by timbre: the register prior is weak."""
    e, labels = groups(k, 30)
    pitches = np.random.default_rng(k).integers(48, 73, len(labels))
    assert same_partition(cluster.instrument_labels(e, pitches, k), labels)


def test_instrument_labels_deterministic_canonical_and_edge_cases():
    e, pitches, _ = two_registers(3)
    a = cluster.instrument_labels(e, pitches, 3)
    assert np.array_equal(a, cluster.instrument_labels(e.copy(), pitches.copy(), 3))
    assert a.shape == (len(e),) and a.dtype == np.int64
    assert a[0] == 0 and set(a.tolist()) == {0, 1, 2}
    assert cluster.instrument_labels(np.zeros((0, 12)), np.zeros(0), 3).shape == (0,)
    assert cluster.instrument_labels(e, pitches, 1).tolist() == [0] * len(e)
    assert sorted(cluster.instrument_labels(e[:2], pitches[:2], 5).tolist()) == [0, 1]
    with pytest.raises(ValueError, match="pitches must be"):
        cluster.instrument_labels(e, pitches[:-1], 2)
    with pytest.raises(ValueError, match="anchors must be"):
        cluster.instrument_labels(e, pitches, 2, anchors=np.ones(3, bool))
    with pytest.raises(ValueError, match=">= 1"):
        cluster.instrument_labels(e, pitches, 0)


def test_instrument_labels_on_many_notes_use_a_subset_and_stay_correct():
    rng = np.random.default_rng(4)
    e, pitches, truth = two_registers(4, per=1500)
    got = cluster.instrument_labels(e, pitches, 2, max_notes=300)
    assert same_partition(got, truth)


def test_faint_notes_join_the_group_of_highest_mean_affinity_not_the_biggest():
    """A faint note of the small group's timbre: summed over members (extend_labels) the big group draws
    it in; by mean affinity it joins its own group."""
    rng = np.random.default_rng(0)
    q = np.linalg.qr(rng.standard_normal((12, 12)))[0]
    big = 0.8 * q[0] + 0.6 * q[1] + 0.1 * rng.standard_normal((30, 12)) / np.sqrt(12)
    small = q[1] + 0.1 * rng.standard_normal((5, 12)) / np.sqrt(12)
    faint = (0.3 * q[0] + q[1])[None, :]
    e = np.concatenate([big, small, faint])
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    pitches = np.full(len(e), 60)
    anchors = np.r_[np.ones(35, bool), False]
    got = cluster.instrument_labels(e, pitches, 2, anchors=anchors)
    assert same_partition(got[:35], np.repeat([0, 1], [30, 5]))
    assert got[-1] == got[30]                          # with the small group
    old = cluster.spectral_labels(e, 2, cluster.LABEL_TEMPERATURE, anchors=anchors)
    assert old[-1] == old[0]                           # the old rule put it with the big one


def test_join_by_mean_affinity_equals_the_mean_of_the_pair_affinities():
    rng = np.random.default_rng(1)
    e = rng.standard_normal((40, 12))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    p = rng.integers(30, 90, 40).astype(float)
    groups_of = np.arange(30) % 3
    got = cluster.join_by_mean_affinity(e[30:], p[30:], e[:30], p[:30], groups_of, 3)
    full = cluster.register_log_affinity(e, p)
    want = np.stack([full[30:, :30][:, groups_of == c].mean(axis=1) for c in range(3)], 1).argmax(axis=1)
    assert np.array_equal(got, want)


def test_spectral_kmeans_moves_stray_points_and_never_empties_a_cluster():
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.95, 0.05], [0.0, 1.0], [0.1, 0.9], [0.05, 0.95]])
    start = np.array([0, 0, 1, 1, 1, 1])               # the third point starts in the wrong group
    assert cluster.spectral_kmeans(x, start).tolist() == [0, 0, 0, 1, 1, 1]
    assert cluster.spectral_kmeans(x, start, steps=0).tolist() == start.tolist()
    # a step that would leave a cluster empty is not taken: the two points of group 1 (at +-90 degrees, mean
    # at the origin) are each nearer group 0 (+45) or group 2 (-45)
    deg = np.radians([45, 45, -45, -45, 90, -90])
    ring = np.stack([np.cos(deg), np.sin(deg), np.zeros(6)], 1)          # (n, k) with k = 3
    start = np.array([0, 0, 2, 2, 1, 1])
    assert cluster.spectral_kmeans(ring, start).tolist() == start.tolist()


def test_assign_tracks_uses_the_register():
    """The pipeline's grouping (what CLI and page run) separates one timbre in two registers."""
    from timbreamt.core import notes
    from timbreamt.core.pipeline import assign_tracks

    e, pitches, truth = two_registers(0)
    events = np.zeros(len(e), dtype=notes.NOTE_DTYPE)
    events["start"] = np.arange(len(e)) % 30 * 20
    events["end"] = events["start"] + 15
    events["pitch"] = pitches
    events["amplitude"] = 0.8
    labels, k, warnings = assign_tracks(events, e, 2)
    assert k == 2 and not warnings and same_partition(labels, truth)


def test_non_finite_embeddings_are_a_clear_error():
    e, _ = groups(2, 10)
    e[3, 0] = np.nan
    pitches = np.full(len(e), 60.0)
    with pytest.raises(ValueError, match="embeddings must be finite"):
        cluster.instrument_labels(e, pitches, 2)
    with pytest.raises(ValueError, match="embeddings must be finite"):
        cluster.spectral_labels(e, 2)
