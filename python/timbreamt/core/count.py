"""How many instruments play: a small learned estimator for ``--instruments auto`` (numpy only).

Why not the eigengap alone: on our embeddings it says "one instrument" for most mixtures (right on 40-46% of
clips; the model card has the study). A clip's notes carry two other cues it ignores: how many notes sound at
once (a single flute never plays a chord, four singers often do), and whether, once the notes are split into k
groups by timbre, each group still holds overlapping notes (the split went too far or not far enough). A
multinomial logistic regression over these cues and the affinity's leading eigenvalues is fitted on training
renders (training/count.py) and travels in the Septimbre graph's metadata (``count_model``), so the estimator
and the encoder whose embeddings it reads always match. Graphs without it keep the eigengap. The model names
the features it reads (DEFAULT_FEATURES for the first ones; ``fit-count --features all`` adds the share of
simultaneous onsets), and the runtime computes exactly those.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from . import cluster
from .constants import FRAMES_PER_SECOND

# the features this version computes, in order; a count model names the ones it was fitted on (any of these,
# each once) and is refused if it names one this version does not compute
POLYPHONY_LEVELS = (2, 3, 4, 5)        # share of sounding frames with at least this many notes
POLYPHONY_QUANTILES = (0.9, 0.98)
N_EIGENVALUES = 5                      # eigenvalues 2..6 of the normalised affinity (the first is 1)
OVERLAP_COUNTS = (2, 3, 4)             # k of the timbre splits whose within-group overlap is measured
# onsets this close (frames, ~23 ms) to the previous one start together: a chord, or several instruments
# entering at once (a melody instrument alone rarely does); the share of onset groups of at least 2 notes
ONSET_GROUP_FRAMES = 2
SIMULTANEOUS_ONSETS = (2,)
DEFAULT_FEATURES: tuple[str, ...] = (
    tuple(f"polyphony>={n}" for n in POLYPHONY_LEVELS) + ("mean polyphony",)
    + tuple(f"polyphony q{q:g}" for q in POLYPHONY_QUANTILES)
    + tuple(f"eigenvalue {i}" for i in range(2, 2 + N_EIGENVALUES))
    + tuple(f"overlap within {k} groups" for k in OVERLAP_COUNTS) + ("mean cosine",))
FEATURE_NAMES: tuple[str, ...] = DEFAULT_FEATURES + tuple(f"simultaneous onsets>={m}" for m in SIMULTANEOUS_ONSETS)
MIN_NOTES = 3                           # fewer notes: one instrument, no estimate
# a clip is read in pieces of the length the model was fitted on (training renders are 10 s): its features
# (eigenvalues, overlaps) shift with the number of notes, so a whole song read at once would be out of range
COUNT_PIECE_SECONDS = 10.0
COUNT_PIECE_FRAMES = int(round(COUNT_PIECE_SECONDS * FRAMES_PER_SECOND))


@dataclass(frozen=True)
class CountModel:
    """A fitted multinomial logistic regression: standardised features (x - mean) / scale, scores
    x @ weights + bias (features, classes), the class of the best score is the count. ``feature_names``:
    the features it reads, in the order of its rows (DEFAULT_FEATURES for models fitted before others existed)."""

    classes: tuple[int, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    feature_names: tuple[str, ...] = DEFAULT_FEATURES

    def to_json(self) -> str:
        return json.dumps({"classes": list(self.classes), "features": list(self.feature_names),
                           "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                           "weights": self.weights.tolist(), "bias": self.bias.tolist()})

    @classmethod
    def from_json(cls, text: str) -> "CountModel":
        """Parse and check a ``count_model`` metadata entry; raises ValueError naming what is wrong."""
        try:
            d = json.loads(text)
            model = cls(tuple(int(c) for c in d["classes"]), np.asarray(d["mean"], float),
                        np.asarray(d["scale"], float), np.asarray(d["weights"], float),
                        np.asarray(d["bias"], float), tuple(str(f) for f in d["features"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"count_model is not a readable count model ({exc})") from None
        model.validate()
        return model

    def validate(self) -> None:
        f, c = len(self.feature_names), len(self.classes)
        unknown = [n for n in self.feature_names if n not in FEATURE_NAMES]
        if unknown or not f or len(set(self.feature_names)) != f:
            raise ValueError(f"count_model was fitted on other features than this version computes "
                             f"({', '.join(unknown) if unknown else 'none or repeated'})")
        if not c or min(self.classes) < 1 or len(set(self.classes)) != c:
            raise ValueError(f"count_model classes must be distinct counts >= 1, got {self.classes}")
        shapes = {"mean": (self.mean.shape, (f,)), "scale": (self.scale.shape, (f,)),
                  "weights": (self.weights.shape, (f, c)), "bias": (self.bias.shape, (c,))}
        for name, (got, want) in shapes.items():
            if got != want:
                raise ValueError(f"count_model {name} has shape {got}, expected {want}")
        arrays = (self.mean, self.scale, self.weights, self.bias)
        if not all(np.all(np.isfinite(a)) for a in arrays) or np.any(self.scale <= 0):
            raise ValueError("count_model holds non-finite values or a scale <= 0")

    def log_probabilities(self, features: np.ndarray) -> np.ndarray:
        """Log-probability of each class (C,) for one piece's features (F,) from count_features."""
        scores = ((np.asarray(features, float) - self.mean) / self.scale) @ self.weights + self.bias
        scores = scores - scores.max()
        return scores - np.log(np.exp(scores).sum())

    def predict(self, features: np.ndarray) -> int:
        """The count for one piece's features (F,) from count_features."""
        return self.vote([features])

    def vote(self, pieces_features: list[np.ndarray]) -> int:
        """The count of a clip read in pieces: the class of the largest summed log-probability."""
        total = sum(self.log_probabilities(f) for f in pieces_features)
        return int(self.classes[int(np.argmax(total))])


def count_model_from_metadata(metadata: Mapping[str, str]) -> CountModel | None:
    """The graph's count model, or None when it has none (the eigengap is used)."""
    text = metadata.get("count_model")
    return None if text is None else CountModel.from_json(text)


def _polyphony(starts: np.ndarray, ends: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Notes sounding per frame in each group, (n_groups, frames)."""
    n_frames = int(ends.max()) + 1
    change = np.zeros((n_groups, n_frames + 1))
    np.add.at(change, (groups, starts), 1)
    np.add.at(change, (groups, ends), -1)
    return np.cumsum(change, axis=1)[:, :n_frames]


def count_features(starts: np.ndarray, ends: np.ndarray, embeddings: np.ndarray,
                   names: tuple[str, ...] = DEFAULT_FEATURES) -> np.ndarray:
    """Features (len(names),) of one clip's notes for the count model, in the order of ``names`` (each
    one of FEATURE_NAMES).

    starts, ends (n,) note frames (end exclusive); embeddings (n, D) L2-normalised note embeddings.
    Needs at least MIN_NOTES notes. Long clips are read through at most cluster.MAX_SPECTRAL_NOTES
    evenly spaced notes for the spectral part (bounded time and memory).
    """
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    emb = np.asarray(embeddings, dtype=np.float64)
    n = len(starts)
    if ends.shape != (n,) or emb.ndim != 2 or len(emb) != n:
        raise ValueError(f"starts, ends (n,) and embeddings (n, D) must agree, got {starts.shape}, "
                         f"{ends.shape}, {emb.shape}")
    if n < MIN_NOTES:
        raise ValueError(f"counting instruments needs at least {MIN_NOTES} notes, got {n}")
    if np.any(ends <= starts) or np.any(starts < 0):
        raise ValueError("every note must have 0 <= start < end")
    first = starts.min()                     # a piece late in a long file: count from its first note
    starts, ends = starts - first, ends - first
    sounding = _polyphony(starts, ends, np.zeros(n, np.int64), 1)[0]
    sounding = sounding[sounding > 0]
    feats = [float(np.mean(sounding >= level)) for level in POLYPHONY_LEVELS]
    feats += [float(sounding.mean())] + [float(np.quantile(sounding, q)) for q in POLYPHONY_QUANTILES]

    sub = cluster.subset_indices(n)
    e = emb[sub]
    vals, vecs = cluster.spectrum(cluster.affinity(e, cluster.LABEL_TEMPERATURE))
    top = np.zeros(N_EIGENVALUES)
    top[:min(N_EIGENVALUES, len(vals) - 1)] = vals[1:1 + N_EIGENVALUES]
    feats += top.tolist()
    for k in OVERLAP_COUNTS:
        # the groups spectral_labels would give for k (same affinity, same eigenvectors, all notes)
        k_sub = min(k, len(sub))
        groups = cluster.extend_labels(emb, sub, cluster.cluster_qr(vecs[:, :k_sub]), k_sub)
        per_group = _polyphony(starts, ends, groups, k_sub)
        feats.append(float(np.mean(per_group[per_group > 0] >= 2)))
    feats.append(float(np.mean(e @ e.T)))
    feats += _simultaneous_onsets(starts).tolist()
    table = dict(zip(FEATURE_NAMES, feats))
    try:
        return np.asarray([table[name] for name in names])
    except KeyError as exc:
        raise ValueError(f"unknown count feature {exc}; known: {', '.join(FEATURE_NAMES)}") from None


def _simultaneous_onsets(starts: np.ndarray) -> np.ndarray:
    """Share of onset groups holding at least m notes, for m in SIMULTANEOUS_ONSETS; a group is a run of
    onsets each at most ONSET_GROUP_FRAMES after the one before."""
    ordered = np.sort(starts)
    breaks = np.flatnonzero(np.diff(ordered) > ONSET_GROUP_FRAMES) + 1
    sizes = np.diff(np.concatenate([[0], breaks, [len(ordered)]]))
    return np.array([np.mean(sizes >= m) for m in SIMULTANEOUS_ONSETS], dtype=np.float64)


def pieces(starts: np.ndarray, piece_frames: int = COUNT_PIECE_FRAMES) -> list[np.ndarray]:
    """Indices of the notes starting in each piece of ``piece_frames`` frames that holds at least
    MIN_NOTES notes; a last piece shorter than half a piece joins the one before it."""
    starts = np.asarray(starts, dtype=np.int64)
    if not len(starts):
        return []
    n_pieces = max(1, int(round((int(starts.max()) + 1) / piece_frames)))
    which = np.minimum(starts // piece_frames, n_pieces - 1)
    return [idx for idx in (np.flatnonzero(which == p) for p in range(n_pieces)) if len(idx) >= MIN_NOTES]


def estimate_count(starts: np.ndarray, ends: np.ndarray, embeddings: np.ndarray,
                   model: CountModel | None) -> int:
    """Number of instruments: the count model's answer, or the eigengap's without one.

    With a model, the notes are read in pieces of COUNT_PIECE_SECONDS (by start) and the pieces' class
    log-probabilities are summed: the answer of the whole clip."""
    if model is None:
        return cluster.estimate_k(embeddings)
    starts, ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    emb = np.asarray(embeddings)
    groups = pieces(starts, COUNT_PIECE_FRAMES)
    if not groups:
        return 1
    return model.vote([count_features(starts[i], ends[i], emb[i], model.feature_names) for i in groups])
