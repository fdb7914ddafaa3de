"""Group notes into instruments: note embeddings, affinity, spectral clustering (numpy only).

Runs unchanged in Pyodide: no scipy, no sklearn, no randomness. Same input -> same labels.
- note embedding: mean of its cells' embeddings weighted by frame probability, L2-normalised;
- affinity exp(cosine / temperature) (temperature 1 is the paper's exp(cos));
- normalised affinity D^-1/2 A D^-1/2, its top-k eigenvectors (numpy.linalg.eigh, deterministic);
- labels by cluster_qr (Damle, Minden & Ying): a pivoted-QR choice of k representative notes and a
  rotation of the eigenvectors onto them, with no random start (unlike k-means);
- k estimated by the eigengap when not given.
Faint notes (often upper harmonics detected as notes) do not form groups: they join the nearest group
formed by the louder notes (anchor_notes).
Large inputs: beyond MAX_SPECTRAL_NOTES notes the spectral step runs on an evenly spaced subset and
the remaining notes join the cluster whose mean embedding is nearest (bounded memory and time).

instrument_labels (what the pipeline uses) adds what music gives for free to the timbre affinity:
- register: one instrument's notes lie in a contiguous pitch range, so the log-affinity loses
  (delta pitch)^2 / (2 sigma^2);
- non-anchor notes join the group of highest *mean* log-affinity (register included), not the nearest
  summed embedding (which drew faint notes into the biggest group);
- a few k-means steps on the row-normalised spectral vectors, started from cluster_qr's labels.
spectral_labels keeps the timbre-only grouping (encoder validation, tests of the embedding alone).
"""
from __future__ import annotations

import numpy as np

MAX_SPECTRAL_NOTES = 1000
MAX_AUTO_CLUSTERS = 8
# Affinity temperatures, chosen on validation mixtures (training programs, unheard music; two sets,
# 72 and 36 clips, agreeing): labels with N given, assignment accuracy 0.709 -> 0.720 and 0.672 -> 0.691
# at 0.25 instead of the paper's exp(cos) (1.0); the eigengap finds N in 44% / 43% of clips at 0.1
# instead of 38% / 34% at 0.25.
LABEL_TEMPERATURE = 0.25
AUTO_TEMPERATURE = 0.1
# The groups are formed by the notes at least this fraction of the clip's 90th-percentile note amplitude;
# fainter notes then join the nearest group. Why: faint notes are often the upper harmonics of a louder
# note detected as notes of their own ("ghosts"); their embeddings sit apart from every instrument's, so
# with N given they took a cluster of their own and merged two real instruments (three_mix with the
# v0.6.0 note branch: multi-instrument F1 0.48 -> 0.86 with this rule).
ANCHOR_AMPLITUDE_FRACTION = 0.75
ANCHOR_PERCENTILE = 90
# instrument_labels, chosen on the OOD validation mixtures (val-ood, val-ood2, val-ood-evalstyle, val-ood3:
# 139 clips of 2-4 instruments, shipped Septimbre v0.6.0 graph, N given; /work/runs/cluster2/): multi-instrument
# F1 0.459 (spectral_labels) -> 0.473 with the mean-affinity join, 0.482 with the register prior of
# sigma 24 semitones (12: 0.471, 18: 0.479, 36: 0.478), 0.486 with the k-means steps; better at N = 2, 3
# and 4 and on each of the four sets. Measured and left out: an overlap ("cannot-link") penalty on the
# log-affinity (-0.001 / -0.002 at weights 2 / 4 next to the register prior: instruments here play chords and
# several voices), a bonus for successive near-pitch notes (-0.001 / -0.018), a logistic pair model of cosine,
# register and overlap fitted on these clips (0.479), and reassigning notes by centroid costs (0.438).
REGISTER_SIGMA_SEMITONES = 24.0
SPECTRAL_KMEANS_STEPS = 10


def note_embeddings(block_keys: np.ndarray, block_vectors: np.ndarray, frame_map: np.ndarray,
                    frame_threshold: float, starts: np.ndarray, ends: np.ndarray, rows: np.ndarray,
                    block_frames: int = 4, max_cells_per_batch: int = 1 << 18) -> np.ndarray:
    """Frame-weighted mean embedding of each note, L2-normalised.

    block_keys (m,) int64 strictly ascending, key = block * n_pitches + pitch_row with block = frame //
    block_frames; block_vectors (m, D) their embeddings. frame_map (n_pitches, T) frame probabilities:
    a note's cell (row, t) weighs frame_map[row, t] when that is >= frame_threshold, else 0. Notes:
    starts, ends (exclusive) in frames and rows (pitch - 24), each (n,). Returns (n, D) float64; a
    note with no active cell gets a zero vector. Works through the notes in batches of at most
    ``max_cells_per_batch`` cells, so memory stays bounded however long the file.
    """
    keys = np.asarray(block_keys, dtype=np.int64)
    emb = np.asarray(block_vectors)            # any float dtype: only the blocks used are upcast
    if emb.ndim != 2 or len(emb) != len(keys):
        raise ValueError("block_keys (m,) and block_vectors (m, D) must have the same length m")
    if len(keys) > 1 and np.any(np.diff(keys) <= 0):
        raise ValueError("block_keys must be strictly increasing")
    if frame_map.ndim != 2:
        raise ValueError(f"frame_map must be (pitches, frames), got shape {frame_map.shape}")
    if block_frames < 1:
        raise ValueError(f"block_frames must be >= 1, got {block_frames}")
    n_pitches, n_frames = frame_map.shape
    starts, ends, rows = (np.asarray(a, dtype=np.int64) for a in (starts, ends, rows))
    n, dim = len(starts), emb.shape[1]
    out = np.zeros((n, dim))
    if n == 0 or len(keys) == 0:
        return out
    lengths = np.clip(np.minimum(ends, n_frames) - starts, 0, None)
    first = 0
    while first < n:
        # notes [first, last) hold at most max_cells_per_batch cells (at least one note per batch)
        last = max(first + 1, int(np.searchsorted(np.cumsum(lengths[first:]), max_cells_per_batch, "right")) + first)
        _pool_notes(out, first, last, keys, emb, frame_map, frame_threshold, starts, lengths, rows, block_frames)
        first = last
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


def _pool_notes(out: np.ndarray, first: int, last: int, keys: np.ndarray, emb: np.ndarray, frame_map: np.ndarray,
                frame_threshold: float, starts: np.ndarray, lengths: np.ndarray, rows: np.ndarray,
                block_frames: int) -> None:
    n_pitches = frame_map.shape[0]
    # repeat counts must be intp: int32 on wasm32 (Pyodide), where int64 counts raise
    lens = lengths[first:last].astype(np.intp)
    note_of = np.repeat(np.arange(first, last), lens)
    offsets = np.arange(lens.sum(), dtype=np.int64) - np.repeat(np.cumsum(lens, dtype=np.int64) - lens, lens)
    frames = starts[note_of] + offsets
    cell_rows = rows[note_of]
    w = frame_map[cell_rows, frames].astype(np.float64)
    active = w >= frame_threshold
    wanted = (frames[active] // block_frames) * n_pitches + cell_rows[active]
    pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    hit = keys[pos] == wanted
    np.add.at(out, note_of[active][hit], emb[pos[hit]].astype(np.float64) * w[active][hit][:, None])


def affinity(embeddings: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """exp(cosine similarity / temperature), (n, n). Embeddings are L2-normalised rows."""
    e = np.asarray(embeddings, dtype=np.float64)
    return np.exp((e @ e.T) / temperature)


def spectrum(aff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors of the normalised affinity D^-1/2 A D^-1/2."""
    inv_sqrt = 1.0 / np.sqrt(aff.sum(axis=1))
    aff *= inv_sqrt[:, None]                 # in place: the affinity is ours and n x n is the big array
    aff *= inv_sqrt[None, :]
    vals, vecs = np.linalg.eigh(aff)         # symmetric by construction; eigh reads one triangle
    order = np.argsort(-vals, kind="stable")
    return vals[order], vecs[:, order] * inv_sqrt[:, None]


def _pivot_columns(mat: np.ndarray, k: int) -> np.ndarray:
    """The k column indices a column-pivoted QR of ``mat`` (k, n) picks: repeatedly the column of
    largest remaining norm, then project it out of the rest (Businger-Golub)."""
    r = np.array(mat, dtype=np.float64, copy=True)
    chosen = []
    for _ in range(k):
        norms = np.einsum("ij,ij->j", r, r)
        norms[chosen] = -1.0
        j = int(np.argmax(norms))
        chosen.append(j)
        q = r[:, j] / np.sqrt(max(norms[j], 1e-300))
        r -= np.outer(q, q @ r)
    return np.array(chosen)


def cluster_qr(vectors: np.ndarray) -> np.ndarray:
    """Labels (n,) from k spectral embedding columns (n, k) by cluster_qr."""
    k = vectors.shape[1]
    piv = _pivot_columns(vectors.T, k)
    ut, _, vt = np.linalg.svd(vectors[piv, :].T)
    return np.abs(vectors @ (ut @ vt)).argmax(axis=1)


def estimate_k(embeddings: np.ndarray, max_k: int = MAX_AUTO_CLUSTERS, temperature: float = AUTO_TEMPERATURE) -> int:
    """Number of instruments by the largest eigengap of the normalised affinity (1..max_k), computed
    on at most MAX_SPECTRAL_NOTES evenly spaced notes."""
    n = len(embeddings)
    if n <= 1:
        return n
    sub = np.asarray(embeddings)[subset_indices(n, MAX_SPECTRAL_NOTES)]   # bounded memory: n x n affinity
    vals, _ = spectrum(affinity(sub, temperature))
    top = vals[:min(max_k, len(sub) - 1) + 1]
    gaps = top[:-1] - top[1:]
    return int(np.argmax(gaps)) + 1


def subset_indices(n: int, limit: int = MAX_SPECTRAL_NOTES) -> np.ndarray:
    """Indices of at most ``limit`` evenly spaced items of n (all of them when n <= limit)."""
    return np.arange(n) if n <= limit else np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def anchor_notes(amplitudes: np.ndarray) -> np.ndarray:
    """Which notes (n,) bool form the groups: amplitude >= ANCHOR_AMPLITUDE_FRACTION x the clip's
    ANCHOR_PERCENTILE-th percentile of note amplitudes."""
    amp = np.asarray(amplitudes, dtype=np.float64)
    if amp.ndim != 1:
        raise ValueError(f"amplitudes must be (n,), got shape {amp.shape}")
    if not len(amp):
        return np.zeros(0, dtype=bool)
    return amp >= ANCHOR_AMPLITUDE_FRACTION * np.percentile(amp, ANCHOR_PERCENTILE)


def spectral_labels(embeddings: np.ndarray, k: int, temperature: float = 1.0,
                    max_notes: int = MAX_SPECTRAL_NOTES, anchors: np.ndarray | None = None) -> np.ndarray:
    """Cluster labels (n,) in 0..k-1 for L2-normalised note embeddings (n, D).

    anchors (n,) bool: the notes that form the groups (anchor_notes); the others join the group whose mean
    embedding is nearest. None, or fewer anchors than k: every note. Labels are renumbered by first
    appearance (the first note gets 0), so they are canonical.
    """
    e = _as_embeddings(embeddings)
    n = len(e)
    trivial = _trivial_labels(n, k)
    if trivial is not None:
        return trivial
    k = min(k, n)
    idx = grouping_notes(n, k, anchors, max_notes)
    _, vecs = spectrum(affinity(e[idx], temperature))
    return canonical_labels(extend_labels(e, idx, cluster_qr(vecs[:, :k]), k))


def _as_embeddings(embeddings: np.ndarray) -> np.ndarray:
    """Note embeddings as float64 (n, D); ValueError when not two-dimensional or not finite."""
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be (n, D), got shape {e.shape}")
    if not np.isfinite(e).all():
        raise ValueError("embeddings must be finite")
    return e


def _trivial_labels(n: int, k: int) -> np.ndarray | None:
    """The labels of n notes when there is nothing to cluster (no notes, or one group), else None;
    ValueError for k < 1."""
    if k < 1:
        raise ValueError(f"number of clusters must be >= 1, got {k}")
    if n == 0 or min(k, n) == 1:
        return np.zeros(n, dtype=np.int64)
    return None


def grouping_notes(n: int, k: int, anchors: np.ndarray | None, max_notes: int = MAX_SPECTRAL_NOTES) -> np.ndarray:
    """Indices of the notes that form the k groups: the anchors (n,) bool if there are at least k of them,
    else every note; at most ``max_notes`` of them, spread evenly (subset_indices)."""
    pool = np.arange(n)
    if anchors is not None:
        anchors = np.asarray(anchors, dtype=bool)
        if anchors.shape != (n,):
            raise ValueError(f"anchors must be ({n},) bool, got shape {anchors.shape}")
        if anchors.sum() >= k:
            pool = np.flatnonzero(anchors)
    return pool[subset_indices(len(pool), max_notes)]


def register_log_affinity(embeddings: np.ndarray, pitches: np.ndarray, temperature: float = LABEL_TEMPERATURE,
                          sigma: float = REGISTER_SIGMA_SEMITONES) -> np.ndarray:
    """cosine / temperature - (pitch_i - pitch_j)^2 / (2 sigma^2), (n, n): the log of the timbre affinity
    times a Gaussian register prior. embeddings (n, D) L2-normalised rows, pitches (n,) in semitones (MIDI)."""
    e = np.asarray(embeddings, dtype=np.float64)
    p = np.asarray(pitches, dtype=np.float64)
    diff = p[:, None] - p[None, :]
    return (e @ e.T) / temperature - diff * diff / (2.0 * sigma * sigma)


def instrument_labels(embeddings: np.ndarray, pitches: np.ndarray, k: int, anchors: np.ndarray | None = None,
                      temperature: float = LABEL_TEMPERATURE, sigma: float = REGISTER_SIGMA_SEMITONES,
                      max_notes: int = MAX_SPECTRAL_NOTES, kmeans_steps: int = SPECTRAL_KMEANS_STEPS) -> np.ndarray:
    """Instrument labels (n,) in 0..k-1 of notes from their timbre and their register.

    embeddings (n, D) L2-normalised note embeddings; pitches (n,) MIDI pitches; anchors (n,) bool as in
    spectral_labels (None, or fewer than k: every note forms the groups). The groups are formed on at
    most ``max_notes`` anchors by spectral clustering of exp(register_log_affinity) (cluster_qr, then
    ``kmeans_steps`` k-means steps on the row-normalised spectral vectors); every other note joins the
    group of highest mean log-affinity. Deterministic; labels renumbered by first appearance.
    """
    e = _as_embeddings(embeddings)
    n = len(e)
    p = np.asarray(pitches, dtype=np.float64)
    if p.shape != (n,):
        raise ValueError(f"pitches must be ({n},), got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("pitches must be finite")
    if sigma <= 0 or temperature <= 0:
        raise ValueError(f"temperature and sigma must be positive, got {temperature} and {sigma}")
    trivial = _trivial_labels(n, k)
    if trivial is not None:
        return trivial
    k = min(k, n)
    idx = grouping_notes(n, k, anchors, max_notes)
    _, vecs = spectrum(np.exp(register_log_affinity(e[idx], p[idx], temperature, sigma)))
    sub = spectral_kmeans(vecs[:, :k], cluster_qr(vecs[:, :k]), kmeans_steps)
    labels = np.empty(n, dtype=np.int64)
    labels[idx] = sub
    rest = np.setdiff1d(np.arange(n), idx)
    if len(rest):
        labels[rest] = join_by_mean_affinity(e[rest], p[rest], e[idx], p[idx], sub, k, temperature, sigma)
    return canonical_labels(labels)


def spectral_kmeans(vectors: np.ndarray, labels: np.ndarray, steps: int = SPECTRAL_KMEANS_STEPS) -> np.ndarray:
    """At most ``steps`` Lloyd steps of k-means on the row-normalised spectral vectors (n, k) from
    ``labels`` (n,) in 0..k-1 (cluster_qr's). Stops when nothing moves, and before a step that would
    empty a cluster (a track asked for stays filled)."""
    k = vectors.shape[1]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    x = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    # intp: bincount refuses int64 on wasm32 (Pyodide), where intp is int32
    labels = np.asarray(labels, dtype=np.intp)
    for _ in range(steps):
        counts = np.bincount(labels, minlength=k)
        centroids = np.zeros((k, x.shape[1]))
        np.add.at(centroids, labels, x)
        centroids /= np.maximum(counts, 1)[:, None]
        dist = (x * x).sum(1)[:, None] - 2.0 * x @ centroids.T + (centroids * centroids).sum(1)[None, :]
        new = dist.argmin(axis=1)
        if np.array_equal(new, labels) or np.bincount(new, minlength=k).min() == 0:
            break
        labels = new
    return labels


def join_by_mean_affinity(emb: np.ndarray, pitches: np.ndarray, group_emb: np.ndarray, group_pitches: np.ndarray,
                          group_labels: np.ndarray, k: int, temperature: float = LABEL_TEMPERATURE,
                          sigma: float = REGISTER_SIGMA_SEMITONES) -> np.ndarray:
    """Group (m,) of each of m notes: the group whose members have the highest mean register_log_affinity
    with it. Computed in closed form from each group's mean embedding, mean pitch and pitch variance,
    O(m k): the mean of (p - p_j)^2 over a group is (p - mean)^2 + variance."""
    group_labels = np.asarray(group_labels, dtype=np.intp)      # bincount refuses int64 on wasm32
    counts = np.bincount(group_labels, minlength=k).astype(np.float64)
    size = np.maximum(counts, 1.0)
    mean_emb = np.zeros((k, group_emb.shape[1]))
    np.add.at(mean_emb, group_labels, group_emb)
    mean_emb /= size[:, None]
    mean_p = np.bincount(group_labels, weights=group_pitches, minlength=k) / size
    var_p = np.bincount(group_labels, weights=group_pitches ** 2, minlength=k) / size - mean_p ** 2
    diff = pitches[:, None] - mean_p[None, :]
    score = (emb @ mean_emb.T) / temperature - (diff * diff + var_p[None, :]) / (2.0 * sigma * sigma)
    score[:, counts == 0] = -np.inf
    return score.argmax(axis=1)


def extend_labels(embeddings: np.ndarray, idx: np.ndarray, sub_labels: np.ndarray, k: int) -> np.ndarray:
    """Labels (n,) of all notes from those of the subset ``idx``: every other note joins the cluster
    whose mean embedding is nearest (cosine)."""
    e = np.asarray(embeddings, dtype=np.float64)
    labels = np.empty(len(e), dtype=np.int64)
    labels[idx] = sub_labels
    if len(idx) < len(e):
        centroids = np.zeros((k, e.shape[1]))
        np.add.at(centroids, sub_labels, e[idx])
        rest = np.setdiff1d(np.arange(len(e)), idx)
        labels[rest] = np.argmax(e[rest] @ centroids.T, axis=1)
    return labels


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Renumber labels by order of first appearance."""
    labels = np.asarray(labels)
    _, first = np.unique(labels, return_index=True)
    order = np.unique(labels)[np.argsort(first)]
    remap = {int(old): new for new, old in enumerate(order)}
    return np.array([remap[int(v)] for v in labels], dtype=np.int64)
