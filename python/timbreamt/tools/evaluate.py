"""Evaluation: every system (ours, the reference graphs, basic-pitch) on the held-out set and the shared
examples, scored with training/metrics.py (mir_eval); markdown tables and a chart."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core import constants as C
from ..runtime.midi_file import midi_parts  # noqa: F401  (reference notes of the shared examples)
from ..training.metrics import frame_scores, multi_instrument_scores, note_scores
from .basic_pitch import BasicPitch
from .paths import REFERENCE_DIR, REFERENCE_MODELS_DIR


def evaluate_references(reference_dir: Path | None = None, models: Path | None = None,
                        reference_models: Path | None = None) -> list[dict]:
    """Every system on the shared reference examples (piano_short, three_mix, short_mix)."""
    from ..runtime.audio import AudioStream
    from ..runtime.transcriber import Transcriber
    from ..runtime.model import models_dir
    reference_dir = reference_dir or REFERENCE_DIR
    models = models or models_dir()
    reference_models = reference_models or REFERENCE_MODELS_DIR
    systems = {"timbreamt basicamt": (models / "basicamt.onnx", False),
               "timbreamt septimbre": (models / "septimbre.onnx", True),
               "reference basicamt": (reference_models / "basicamt_44100.onnx", False),
               "reference septimbre": (reference_models / "septimbre_44100.onnx", True)}
    bp = BasicPitch()
    rows = []
    for name in ("piano_short", "three_mix", "short_mix"):
        wav = reference_dir / f"{name}.wav"
        parts = midi_parts(reference_dir / f"{name}.mid")
        ref = np.concatenate(parts)
        for system, (path, separates) in systems.items():
            t = Transcriber(path)
            res = t.transcribe(wav, instruments=None)
            est = np.array([[n.start, n.end, n.pitch] for tr in res.tracks for n in tr.notes]).reshape(-1, 3)
            row = {"clip": name, "system": system, "note_f1": note_scores(ref, est)["f1"],
                   "note_f1_offsets": note_scores(ref, est, with_offsets=True)["f1"]}
            if separates and len(parts) > 1:
                sep = t.transcribe(wav, instruments=len(parts))
                tracks = [np.array([[n.start, n.end, n.pitch] for n in tr.notes]).reshape(-1, 3) for tr in sep.tracks]
                row.update(multi_instrument_scores(parts, tracks))
                auto = t.transcribe(wav, instruments="auto")
                row["auto_n"] = len(auto.tracks)
            rows.append(row)
        audio = np.concatenate(list(AudioStream(wav, 22050)))
        est = bp.transcribe(audio)
        rows.append({"clip": name, "system": "basic-pitch", "note_f1": note_scores(ref, est)["f1"],
                     "note_f1_offsets": note_scores(ref, est, with_offsets=True)["f1"]})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| clip | system | note F1 | F1 with offsets | multi-instrument F1 (N given) | assignment acc. | auto N |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        multi = f"{r['multi_f1']:.3f}" if "multi_f1" in r else "-"
        acc = f"{r['assignment_accuracy']:.3f}" if "assignment_accuracy" in r else "-"
        lines.append(f"| {r['clip']} | {r['system']} | {r['note_f1']:.3f} | {r['note_f1_offsets']:.3f} | {multi} | "
                     f"{acc} | {r.get('auto_n', '-')} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# The held-out evaluation set (data.generate_eval_set): every system in one run, per-clip rows,
# category means, a markdown table, a PNG chart.
# The reference's own post-processing (noteDigger's workers: constants.REFERENCE_THRESHOLDS) decodes
# whole songs in one run, so its graphs (which divide each map by its maximum) see the whole clip.
WHOLE_CLIP_FRAMES = 4096                # > 30 s of frames: one window per evaluation clip
EVAL_SYSTEMS = ("basic-pitch", "reference basicamt", "reference notes + pitch k-means", "reference septimbre",
                "timbreamt basicamt", "timbreamt notes + pitch k-means", "timbreamt septimbre")
MIXTURE_CATEGORIES = ("2 instruments", "3 instruments", "4 instruments")
SOLO_CATEGORIES = ("solo piano", "1 instrument")
SPLITS = ("in-distribution", "out-of-distribution")
ONE_TRACK_SYSTEMS = ("basic-pitch", "reference basicamt", "timbreamt basicamt")   # no separation


def pitch_kmeans(pitches: np.ndarray, k: int, iterations: int = 100) -> np.ndarray:
    """The pitch-only baseline of separation: 1-D k-means of note pitches into k groups.

    Deterministic: centroids start at the pitch quantiles (i + 0.5) / k. Returns labels (n,) in 0..k-1.
    """
    x = np.asarray(pitches, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"pitches must be 1-D, got shape {x.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64)
    centroids = np.quantile(x, (np.arange(k) + 0.5) / k)
    labels = np.zeros(len(x), dtype=np.int64)
    for _ in range(iterations):
        labels = np.abs(x[:, None] - centroids[None, :]).argmin(axis=1)
        new = np.array([x[labels == j].mean() if np.any(labels == j) else centroids[j] for j in range(k)])
        if np.allclose(new, centroids):
            break
        centroids = new
    return labels


def _track_arrays(transcription) -> list[np.ndarray]:
    return [np.array([[n.start, n.end, n.pitch] for n in tr.notes], dtype=np.float64).reshape(-1, 3)
            for tr in transcription.tracks]


def clip_parts(clip: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Reference notes of a clip, one (n, 3) array of (start_s, end_s, pitch) per instrument."""
    notes = clip["notes"]
    n_parts = len(clip["programs"])
    return [notes[notes[:, 3] == k][:, [1, 2, 0]].astype(np.float64) for k in range(n_parts)]


def _score_tracks(parts: list[np.ndarray], tracks: list[np.ndarray]) -> dict[str, float]:
    ref, est = np.concatenate(parts), np.concatenate(tracks) if tracks else np.zeros((0, 3))
    row = {"note_f1": note_scores(ref, est)["f1"],
           "note_f1_offsets": note_scores(ref, est, with_offsets=True)["f1"],
           "frame_f1": frame_scores(ref, est)["f1"]}
    row.update(multi_instrument_scores(parts, tracks))
    return row


class EvalSystems:
    """The systems of the evaluation, loaded once."""

    def __init__(self, models: Path | None = None, reference_models: Path | None = None, threads: int = 2) -> None:
        from ..runtime.transcriber import Transcriber
        from ..runtime.model import models_dir
        models = models or models_dir()
        reference_models = reference_models or REFERENCE_MODELS_DIR
        self.ours = {name: Transcriber(models / f"{name}.onnx", threads) for name in ("basicamt", "septimbre")}
        self.reference = {name: Transcriber(reference_models / f"{name}_44100.onnx", threads)
                          for name in ("basicamt", "septimbre")}
        self.basic_pitch = BasicPitch(threads)

    def evaluate_clip(self, clip: dict[str, np.ndarray]) -> list[dict]:
        """Rows (one per system) of scores on one clip; see EVAL_SYSTEMS."""
        import time

        audio = np.asarray(clip["audio"], dtype=np.float32)
        sr = 22050
        parts = clip_parts(clip)
        n = len(parts)
        base = {"category": str(clip["category"]), "instruments": n}
        rows = []

        def add(system: str, tracks: list[np.ndarray], seconds: float, **extra) -> None:
            rows.append({**base, "system": system, **_score_tracks(parts, tracks), "seconds": seconds, **extra})

        def kmeans_tracks(tracks: list[np.ndarray]) -> list[np.ndarray]:
            notes = np.concatenate(tracks)
            labels = pitch_kmeans(notes[:, 2], n)
            return [notes[labels == j] for j in range(n)]

        t0 = time.perf_counter()
        bp = self.basic_pitch.transcribe(audio)
        add("basic-pitch", [bp], time.perf_counter() - t0)

        def reference(name: str, instruments: int | None) -> tuple[list[np.ndarray], float]:
            onset_t, frame_t = C.REFERENCE_THRESHOLDS[name]
            t0 = time.perf_counter()
            tracks = _track_arrays(self.reference[name].transcribe(
                audio, sr, instruments=instruments, onset_threshold=onset_t, frame_threshold=frame_t,
                core_frames=WHOLE_CLIP_FRAMES))
            return tracks, time.perf_counter() - t0

        ref_notes, seconds = reference("basicamt", None)
        add("reference basicamt", ref_notes, seconds)
        add("reference notes + pitch k-means", kmeans_tracks(ref_notes), 0.0)
        add("reference septimbre", *reference("septimbre", n))

        t0 = time.perf_counter()
        ours = _track_arrays(self.ours["basicamt"].transcribe(audio, sr, instruments=None))
        add("timbreamt basicamt", ours, time.perf_counter() - t0)

        t0 = time.perf_counter()
        sep = _track_arrays(self.ours["septimbre"].transcribe(audio, sr, instruments=n))
        seconds = time.perf_counter() - t0
        add("timbreamt notes + pitch k-means", kmeans_tracks(sep), 0.0)
        auto = _track_arrays(self.ours["septimbre"].transcribe(audio, sr, instruments="auto"))
        auto_scores = multi_instrument_scores(parts, auto)
        add("timbreamt septimbre", sep, seconds, auto_n=len(auto), auto_multi_f1=auto_scores["multi_f1"])
        return rows


def evaluate_set(clip_paths: list[Path], threads: int = 2, progress: bool = True,
                 models: Path | None = None) -> list[dict]:
    """Every system on every clip of an evaluation set; rows carry ``clip`` (file stem)."""
    from tqdm import tqdm

    from ..training.data import load_clip

    if not clip_paths:
        raise ValueError("no evaluation clips")
    systems = EvalSystems(models=models, threads=threads)
    rows = []
    for path in tqdm(clip_paths, disable=not progress, desc="evaluating", unit="clip"):
        for row in systems.evaluate_clip(load_clip(path)):
            rows.append({"clip": Path(path).stem, **row})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per system: means over all clips, over categories, over mixtures; auto-N accuracy."""
    out = []
    for system in dict.fromkeys(r["system"] for r in rows):
        mine = [r for r in rows if r["system"] == system]
        mix = [r for r in mine if r["category"] in MIXTURE_CATEGORIES]
        s = {"system": system, "clips": len(mine)}
        for key in ("note_f1", "note_f1_offsets", "frame_f1", "multi_f1"):
            s[key] = float(np.mean([r[key] for r in mine]))
        s["assignment_accuracy"] = float(np.mean([r["assignment_accuracy"] for r in mix])) if mix else float("nan")
        s["multi_f1_mixtures"] = float(np.mean([r["multi_f1"] for r in mix])) if mix else float("nan")
        s["by_category"] = {c: float(np.mean([r["note_f1"] for r in mine if r["category"] == c]))
                            for c in dict.fromkeys(r["category"] for r in mine)}
        s["note_f1_mixtures"] = float(np.mean([r["note_f1"] for r in mix])) if mix else float("nan")
        solo = [r for r in mine if r["category"] in SOLO_CATEGORIES]
        s["note_f1_solo"] = float(np.mean([r["note_f1"] for r in solo])) if solo else float("nan")
        if any("auto_n" in r for r in mine):
            s["auto_n_accuracy"] = float(np.mean([r["auto_n"] == r["instruments"] for r in mine]))
            s["auto_multi_f1"] = float(np.mean([r["auto_multi_f1"] for r in mine]))
        s["rtf"] = float(np.sum([r["seconds"] for r in mine]) / (30.0 * len(mine)))
        out.append(s)
    return out


def _fmt(v: float | None) -> str:
    return "-" if v is None or v != v else f"{v:.3f}"


def eval_markdown(summary: list[dict]) -> str:
    """Markdown tables of a summary (see summarise)."""
    lines = ["| system | note F1 | F1 with offsets | frame F1 | multi-instrument F1 (N given) | "
             "assignment acc. (mixtures) | auto N right | multi-instrument F1 (auto N) |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        track_note = " (one track)" if s["system"] in ONE_TRACK_SYSTEMS else ""
        acc = None if s["system"] in ONE_TRACK_SYSTEMS else s["assignment_accuracy"]
        lines.append(f"| {s['system']} | {_fmt(s['note_f1'])} | {_fmt(s['note_f1_offsets'])} | {_fmt(s['frame_f1'])} | "
                     f"{_fmt(s['multi_f1'])}{track_note} | {_fmt(acc)} | "
                     f"{_fmt(s.get('auto_n_accuracy'))} | {_fmt(s.get('auto_multi_f1'))} |")
    categories = list(summary[0]["by_category"]) if summary else []
    lines += ["", "Note F1 by category:", "",
              "| system | " + " | ".join(categories) + " | mixtures (2-4) |",
              "|---|" + "---|" * (len(categories) + 1)]
    for s in summary:
        lines.append(f"| {s['system']} | " + " | ".join(_fmt(s["by_category"][c]) for c in categories)
                     + f" | {_fmt(s['note_f1_mixtures'])} |")
    return "\n".join(lines)


def split_summaries(rows: list[dict]) -> dict[str, list[dict]]:
    """summarise() of each split's rows (rows carry ``split``: see SPLITS), in SPLITS order."""
    present = {r.get("split", SPLITS[0]) for r in rows}
    return {split: summarise([r for r in rows if r.get("split", SPLITS[0]) == split])
            for split in SPLITS if split in present}


def gap_markdown(summaries: dict[str, list[dict]]) -> str:
    """Per system: the main figures on both splits side by side, and in-distribution minus
    out-of-distribution (the part of a score that memorised timbres explain)."""
    if set(SPLITS) - set(summaries):
        return ""
    ind = {s["system"]: s for s in summaries[SPLITS[0]]}
    ood = {s["system"]: s for s in summaries[SPLITS[1]]}
    keys = (("note_f1", "note F1"), ("note_f1_solo", "solo"), ("note_f1_mixtures", "mixtures"),
            ("note_f1_offsets", "with offsets"), ("multi_f1", "multi-instr. F1"))
    head = " | ".join(f"{name} ID | OOD | gap" for _, name in keys)
    lines = [f"| system | {head} |", "|---|" + "---|" * (3 * len(keys))]
    for system in ind:
        if system not in ood:
            continue
        cells = []
        for key, _ in keys:
            a, b = ind[system][key], ood[system][key]
            if key == "multi_f1" and system in ONE_TRACK_SYSTEMS:
                a = b = float("nan")
            cells += [_fmt(a), _fmt(b), "-" if a != a or b != b else f"{a - b:+.3f}"]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ood_target_checks(summaries: dict[str, list[dict]]) -> list[tuple[str, float, float, bool]]:
    """Issue 18's targets, on the out-of-distribution split (and its gap to the in-distribution one)."""
    if set(SPLITS) - set(summaries):
        return []
    by = {s["system"]: s for s in summaries[SPLITS[1]]}
    ind = {s["system"]: s for s in summaries[SPLITS[0]]}
    need = ("basic-pitch", "reference septimbre", "timbreamt septimbre", "timbreamt basicamt",
            "timbreamt notes + pitch k-means")
    if any(k not in by for k in need):
        return []
    bp, ours, sep = by["basic-pitch"], by["timbreamt basicamt"], by["timbreamt septimbre"]
    checks = [
        ("OOD note F1, solo >= basic-pitch + 0.05", ours["note_f1_solo"], bp["note_f1_solo"] + 0.05),
        ("OOD note F1, mixtures >= basic-pitch + 0.05", sep["note_f1_mixtures"], bp["note_f1_mixtures"] + 0.05),
        ("OOD note F1 with offsets >= basic-pitch + 0.05", ours["note_f1_offsets"], bp["note_f1_offsets"] + 0.05),
        ("OOD multi-instrument F1 (N given) >= reference septimbre + 0.15", sep["multi_f1_mixtures"],
         by["reference septimbre"]["multi_f1_mixtures"] + 0.15),
        ("OOD multi-instrument F1 (N given) >= our notes + pitch k-means + 0.10", sep["multi_f1_mixtures"],
         by["timbreamt notes + pitch k-means"]["multi_f1_mixtures"] + 0.10),
        ("OOD auto N right >= 0.80", sep["auto_n_accuracy"], 0.80),
        # written as OOD - ID >= -0.05 so that 'met' reads the same way as the others
        ("OOD note F1 - in-distribution note F1 >= -0.05", ours["note_f1"] - ind["timbreamt basicamt"]["note_f1"], -0.05),
    ]
    return [(what, float(v), float(req), bool(v >= req)) for what, v, req in checks]


def target_checks(summary: list[dict]) -> list[tuple[str, float, float, bool]]:
    """The accuracy targets of the project, as (what, ours, required, met)."""
    by = {s["system"]: s for s in summary}
    need = ("basic-pitch", "reference septimbre", "timbreamt septimbre", "timbreamt basicamt",
            "reference notes + pitch k-means", "timbreamt notes + pitch k-means")
    if any(k not in by for k in need):
        return []
    bp, ours, sep = by["basic-pitch"], by["timbreamt basicamt"], by["timbreamt septimbre"]
    piano = "solo piano"
    checks = [
        ("note F1, solo piano >= basic-pitch + 0.05", ours["by_category"].get(piano, float("nan")),
         bp["by_category"].get(piano, float("nan")) + 0.05),
        ("note F1, mixtures >= basic-pitch + 0.05", sep["note_f1_mixtures"], bp["note_f1_mixtures"] + 0.05),
        ("note F1 with offsets >= basic-pitch + 0.08", ours["note_f1_offsets"], bp["note_f1_offsets"] + 0.08),
        ("multi-instrument F1 (N given) >= reference septimbre + 0.15", sep["multi_f1"], by["reference septimbre"]["multi_f1"] + 0.15),
        ("multi-instrument F1 (N given) >= reference notes + pitch k-means + 0.15", sep["multi_f1"],
         by["reference notes + pitch k-means"]["multi_f1"] + 0.15),
        ("multi-instrument F1 (N given) >= our notes + pitch k-means + 0.15", sep["multi_f1"],
         by["timbreamt notes + pitch k-means"]["multi_f1"] + 0.15),
        ("auto N right >= 0.80", sep["auto_n_accuracy"], 0.80),
        ("multi-instrument F1 (auto N) >= N given - 0.05", sep["auto_multi_f1"], sep["multi_f1"] - 0.05),
    ]
    return [(what, float(v), float(req), bool(v >= req)) for what, v, req in checks]


def targets_markdown(checks: list[tuple[str, float, float, bool]]) -> str:
    lines = ["| target | ours | required | met |", "|---|---|---|---|"]
    lines += [f"| {what} | {v:.3f} | {req:.3f} | {'yes' if ok else '**no**'} |" for what, v, req, ok in checks]
    return "\n".join(lines)


def eval_chart(summary: list[dict], path: str | Path, title: str | None = None) -> None:
    """Grouped bar chart (PNG) of the main figures of every system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("note F1\nsolo piano", lambda s: s["by_category"].get("solo piano", np.nan)),
               ("note F1\nmixtures", lambda s: s["note_f1_mixtures"]),
               ("note F1\nwith offsets", lambda s: s["note_f1_offsets"]),
               ("multi-instr. F1\n(N given)", lambda s: s["multi_f1"]),
               ("assignment acc.\n(mixtures)", lambda s: s["assignment_accuracy"] if s["system"] not in
                ONE_TRACK_SYSTEMS else np.nan)]
    fig, ax = plt.subplots(figsize=(12, 5), dpi=100)
    width = 0.8 / max(len(summary), 1)
    x = np.arange(len(metrics))
    for i, s in enumerate(summary):
        values = [f(s) for _, f in metrics]
        ax.bar(x + (i - (len(summary) - 1) / 2) * width, np.nan_to_num(values), width, label=s["system"])
    ax.set_xticks(x, [m for m, _ in metrics])
    ax.set_ylim(0, 1)
    ax.set_ylabel("score (mean over clips)")
    clips = summary[0]["clips"] if summary else 0
    ax.set_title(f"{title or 'Held-out evaluation set (unheard music and programs)'}: {clips} clips of 30 s")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="upper right")
    fig.tight_layout()
    fig.savefig(str(path))
    plt.close(fig)
