"""Fit the instrument-count estimator of ``--instruments auto`` (core/count.py) for one Septimbre graph.

The graph transcribes rendered clips whose number of instruments is known (their ``programs``); each clip's
notes and note embeddings give its features; a class-balanced multinomial logistic regression is fitted on
training clips for each L2 strength of a small grid, and the strength whose balanced accuracy (or accuracy:
``select``) is best on the validation clips (timbre sources never trained on: ``timbreamt data --ood``) is kept.
Which features it reads is a choice too (``features``: count.DEFAULT_FEATURES, or every one this version
computes); the model names them, so the runtime computes the same. The result is written
into the graph's metadata, next to its decoding defaults, so it always travels with the encoder it was
fitted for. Deterministic: plain gradient descent from zeros, no random start.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core import cluster
from ..core import constants as C
from ..core import count as count_core
from ..core.errors import DataError, OutputError
from .data import list_clips, load_clip

L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)
# named feature sets of fit-count: the 16 of the first count model, or every feature this version computes
FEATURE_SETS = {"default": count_core.DEFAULT_FEATURES, "all": count_core.FEATURE_NAMES}
SELECTION = ("balanced", "accuracy")
STEPS = 3000
LEARNING_RATE = 0.5


@dataclass
class ClipFeatures:
    """The count features of rendered clips: one row per piece (count.COUNT_PIECE_SECONDS), as the
    runtime reads a clip, with the clip each row comes from."""

    features: np.ndarray        # (pieces, len(names))
    clip: np.ndarray            # (pieces,) index of the clip
    counts: np.ndarray          # (clips,) true number of instruments
    eigengap: np.ndarray        # (clips,) the eigengap's answer on the whole clip (the fallback)
    names: tuple[str, ...] = count_core.FEATURE_NAMES     # the columns of features

    def piece_counts(self) -> np.ndarray:
        return self.counts[self.clip]

    def columns(self, names: tuple[str, ...]) -> np.ndarray:
        """(pieces, len(names)) the features ``names`` (a subset of self.names), in that order."""
        return self.features[:, [self.names.index(n) for n in names]]

    def predict(self, model: count_core.CountModel) -> np.ndarray:
        """(clips,) each clip's count, its pieces' votes summed as at run time."""
        x = self.columns(model.feature_names)
        return np.array([model.vote(list(x[self.clip == c])) for c in range(len(self.counts))], dtype=np.int64)


def clip_features(graph: str | Path, clip_dirs: list[str | Path], threads: int = 2) -> ClipFeatures:
    """Count features (every one of count.FEATURE_NAMES) of every rendered clip (training/data.py, at
    C.SAMPLE_RATE) of ``clip_dirs`` in which the graph found at least count.MIN_NOTES notes."""
    from ..runtime.transcriber import Transcriber

    tr = Transcriber(graph, threads=threads)
    if not tr.model.has_embedding:
        raise DataError(f"{graph} has no timbre embedding: only Septimbre graphs count instruments")
    feats, clip_of, counts, eigengap = [], [], [], []
    for folder in clip_dirs:
        for path in list_clips(folder):
            clip = load_clip(path)
            acc, *_ = tr.accumulate(clip["audio"].astype(np.float32), sr=C.SAMPLE_RATE)
            events = acc.decode()
            parts = count_core.pieces(events["start"])
            if not parts:
                continue
            emb = acc.note_embeddings(events)
            for idx in parts:
                feats.append(count_core.count_features(events["start"][idx], events["end"][idx], emb[idx],
                                                       count_core.FEATURE_NAMES))
                clip_of.append(len(counts))
            counts.append(len(clip["programs"]))
            eigengap.append(cluster.estimate_k(emb))
    if not feats:
        raise DataError("no clip gave enough notes to fit the count on")
    return ClipFeatures(np.asarray(feats), np.asarray(clip_of, dtype=np.int64), np.asarray(counts, dtype=np.int64),
                        np.asarray(eigengap, dtype=np.int64))


def fit_count_model(features: np.ndarray, counts: np.ndarray, l2: float,
                    feature_names: tuple[str, ...] = count_core.DEFAULT_FEATURES) -> count_core.CountModel:
    """Class-balanced multinomial logistic regression of counts (n,) on features (n, F), whose columns are
    ``feature_names`` (of count.FEATURE_NAMES)."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(counts, dtype=np.int64)
    if x.ndim != 2 or x.shape != (len(y), len(feature_names)):
        raise ValueError(f"features must be (n, {len(feature_names)}) with n = len(counts), got {x.shape}")
    classes = np.unique(y)
    if len(classes) < 2:
        raise DataError(f"fitting a count needs clips of at least two counts, got only {classes.tolist()}")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0                     # a constant feature: leave it unscaled
    z = (x - mean) / scale
    onehot = (y[:, None] == classes[None, :]).astype(np.float64)
    # every count weighs the same however many clips it has: the clips users bring are not our mix
    sample_weight = (onehot / onehot.sum(axis=0)).sum(axis=1)
    sample_weight /= sample_weight.sum()
    weights = np.zeros((x.shape[1], len(classes)))
    bias = np.zeros(len(classes))
    for _ in range(STEPS):
        scores = z @ weights + bias
        scores -= scores.max(axis=1, keepdims=True)
        prob = np.exp(scores)
        prob /= prob.sum(axis=1, keepdims=True)
        grad = (prob - onehot) * sample_weight[:, None]
        weights -= LEARNING_RATE * (z.T @ grad + l2 * weights)
        bias -= LEARNING_RATE * grad.sum(axis=0)
    model = count_core.CountModel(tuple(int(c) for c in classes), mean, scale, weights, bias, tuple(feature_names))
    model.validate()
    return model


def balanced_accuracy(predicted: np.ndarray, counts: np.ndarray) -> float:
    """Mean over the true counts present of the share of clips counted right."""
    return float(np.mean([np.mean(predicted[counts == c] == c) for c in np.unique(counts)]))


def predict_all(model: count_core.CountModel, features: np.ndarray) -> np.ndarray:
    """(n,) the count of each row of features (n, F: the model's features), each read as a clip of one piece."""
    return np.array([model.predict(f) for f in features], dtype=np.int64)


def write_count_model(graph: str | Path, model: count_core.CountModel) -> None:
    """Store ``model`` as the graph's ``count_model`` metadata entry (the weights are untouched)."""
    import onnx

    graph = Path(graph)
    proto = onnx.load(str(graph))
    kept = [(e.key, e.value) for e in proto.metadata_props if e.key != "count_model"]
    del proto.metadata_props[:]
    for key, value in kept + [("count_model", model.to_json())]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    tmp = graph.with_name(graph.name + ".tmp")
    try:
        onnx.save(proto, str(tmp))
        os.replace(tmp, graph)
    except OSError as exc:
        if tmp.is_file():         # a half-written file of ours (a folder of that name is not ours)
            tmp.unlink()
        raise OutputError(f"cannot write the count model into {graph}: {exc.strerror or exc}") from exc


def fit_graph_count(graph: str | Path, train_dirs: list[str | Path], val_dirs: list[str | Path],
                    threads: int = 2, log=print, features: str = "default", select: str = "balanced") -> dict:
    """Fit on the pieces of ``train_dirs`` with the feature set ``features`` (FEATURE_SETS), keep the L2
    strength whose clip-level ``select`` score (balanced accuracy or accuracy) on ``val_dirs`` is best, write
    the model into ``graph``; returns the figures (validation balanced accuracy and accuracy per clip, with
    the eigengap's for comparison)."""
    if features not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {features!r}; choose one of {', '.join(FEATURE_SETS)}")
    if select not in SELECTION:
        raise ValueError(f"unknown selection {select!r}; choose one of {', '.join(SELECTION)}")
    names = FEATURE_SETS[features]
    train = clip_features(graph, train_dirs, threads)
    val = clip_features(graph, val_dirs, threads)
    y_val = val.counts
    log(f"{len(train.counts)} training clips ({len(train.clip)} pieces), {len(y_val)} validation clips; eigengap "
        f"on validation: balanced accuracy {balanced_accuracy(val.eigengap, y_val):.3f}, "
        f"accuracy {np.mean(val.eigengap == y_val):.3f}")
    log(f"features: {features} ({len(names)}); kept by validation {select}")
    rows = []
    for l2 in L2_GRID:
        model = fit_count_model(train.columns(names), train.piece_counts(), l2, names)
        p_val = val.predict(model)
        rows.append({"l2": l2, "train": balanced_accuracy(train.predict(model), train.counts),
                     "val": balanced_accuracy(p_val, y_val), "val_accuracy": float(np.mean(p_val == y_val)),
                     "val_per_count": {int(c): float(np.mean(p_val[y_val == c] == c)) for c in np.unique(y_val)},
                     "model": model})
        per = " ".join(f"{c}: {a:.2f}" for c, a in rows[-1]["val_per_count"].items())
        log(f"l2 {l2:g}: balanced accuracy train {rows[-1]['train']:.3f}, validation {rows[-1]['val']:.3f} "
            f"(accuracy {rows[-1]['val_accuracy']:.3f}; per count {per})")
    key = "val" if select == "balanced" else "val_accuracy"
    best = max(rows, key=lambda r: (r[key], r["l2"]))       # ties: the stronger regularisation
    write_count_model(graph, best["model"])
    log(f"kept l2 {best['l2']:g}; written into {graph}")
    return {k: v for k, v in best.items() if k != "model"} | {
        "features": features, "select": select, "train_clips": len(train.counts), "val_clips": len(y_val),
        "eigengap_val": balanced_accuracy(val.eigengap, y_val),
        "eigengap_val_accuracy": float(np.mean(val.eigengap == y_val))}
