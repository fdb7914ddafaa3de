"""Metrics: mir_eval note scores, frame scores and multi-instrument scores by best assignment."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .midi import midi_parts  # noqa: F401  (reference notes of the shared examples)


def _as_notes(notes: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(notes, dtype=np.float64)
    if a.ndim != 2 or (a.size and a.shape[1] != 3):
        raise ValueError(f"{name} must have shape (n, 3) rows of (start_s, end_s, midi_pitch), got {a.shape}")
    return a.reshape(-1, 3)


def _mir_eval_notes(ref: np.ndarray, est: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ref_intervals, ref_hz, est_intervals, est_hz) as mir_eval wants them: strictly positive
    durations (a zero-length note gets 1 ms) and pitches in Hz."""
    def hz(p: np.ndarray) -> np.ndarray:
        return 440.0 * 2 ** ((p - 69) / 12)

    ref_iv, est_iv = ref[:, :2].copy(), est[:, :2].copy()
    ref_iv[:, 1] = np.maximum(ref_iv[:, 1], ref_iv[:, 0] + 1e-3)
    est_iv[:, 1] = np.maximum(est_iv[:, 1], est_iv[:, 0] + 1e-3)
    return ref_iv, hz(ref[:, 2]), est_iv, hz(est[:, 2])


def note_scores(ref: np.ndarray, est: np.ndarray, onset_tolerance: float = 0.05,
                with_offsets: bool = False) -> dict[str, float]:
    """mir_eval transcription precision/recall/F1.

    ref, est: (n, 3) rows of (start_s, end_s, midi_pitch). Onset tolerance in seconds; with_offsets
    adds mir_eval's offset criterion (20% of the note length or 50 ms).
    Empty reference and empty estimate score 1.0; one of them empty scores 0.0.
    """
    import mir_eval

    ref, est = _as_notes(ref, "ref"), _as_notes(est, "est")
    if len(ref) == 0 or len(est) == 0:
        v = 1.0 if len(ref) == len(est) else 0.0
        return {"precision": v, "recall": v, "f1": v}
    p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
        *_mir_eval_notes(ref, est), onset_tolerance=onset_tolerance, offset_ratio=0.2 if with_offsets else None)
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


def decode_to_intervals(onset: np.ndarray, frame: np.ndarray, onset_threshold: float, frame_threshold: float,
                        min_note_frames: int = 6, hop_seconds: float | None = None, melodia: bool = True) -> np.ndarray:
    """Decode maps (84, T) into (n, 3) rows of (start_s, end_s, midi_pitch)."""
    from . import constants as C
    from .notes import decode_notes

    hop = C.HOP_SECONDS if hop_seconds is None else hop_seconds
    ev = decode_notes(onset, frame, onset_threshold, frame_threshold, min_note_frames, C.ENERGY_TOLERANCE,
                      melodia=melodia)
    if not len(ev):
        return np.zeros((0, 3))
    return np.stack([ev["start"] * hop, ev["end"] * hop, ev["pitch"]], axis=1).astype(np.float64)


def calibrate_thresholds(maps: list[tuple[np.ndarray, np.ndarray]], refs: list[np.ndarray],
                         onset_grid: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
                         frame_grid: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
                         melodia_grid: tuple[bool, ...] = (True, False)) -> dict:
    """Grid-search the decoding (onset and frame thresholds, melodia pass on/off) maximising mean
    note F1 over validation clips.

    maps: [(onset, frame)] each (84, T); refs: [(n, 3) rows of (start_s, end_s, pitch)].
    Returns {'onset_threshold', 'frame_threshold', 'melodia', 'note_f1'} (the first best in grid order).
    """
    if len(maps) != len(refs) or not maps:
        raise ValueError("calibration needs as many reference note lists as maps, and at least one")
    if not (onset_grid and frame_grid and melodia_grid):
        raise ValueError("calibration grids must not be empty")
    best = {"note_f1": -1.0}
    for melodia in melodia_grid:
        for ot in onset_grid:
            for ft in frame_grid:
                f1 = float(np.mean([note_scores(r, decode_to_intervals(o, f, ot, ft, melodia=melodia))["f1"]
                                    for (o, f), r in zip(maps, refs)]))
                if f1 > best["note_f1"]:
                    best = {"onset_threshold": ot, "frame_threshold": ft, "melodia": bool(melodia), "note_f1": f1}
    return best


def multi_instrument_scores(ref_parts: list[np.ndarray], tracks: list[np.ndarray], onset_tolerance: float = 0.05) -> dict[str, float]:
    """Tracks matched to reference parts by the assignment maximising total note F1.

    ref_parts, tracks: lists of (n, 3) arrays of (start_s, end_s, midi_pitch). Returns the mean note F1
    over parts (a part left without a track scores 0) and the assignment accuracy: the share of matched
    (correctly transcribed) notes that sit in the track assigned to their part.
    """
    from scipy.optimize import linear_sum_assignment

    if not ref_parts:
        raise ValueError("no reference parts")
    f1 = np.zeros((len(ref_parts), max(len(tracks), 1)))
    for i, part in enumerate(ref_parts):
        for j, track in enumerate(tracks):
            f1[i, j] = note_scores(part, track, onset_tolerance)["f1"]
    rows, cols = linear_sum_assignment(-f1)
    per_part = np.zeros(len(ref_parts))
    per_part[rows] = f1[rows, cols]
    # assignment accuracy: among reference notes found in any track, the share found in the right one
    right = total = 0
    assigned = dict(zip(rows.tolist(), cols.tolist()))
    for i, part in enumerate(ref_parts):
        for j, track in enumerate(tracks):
            hits = _matched_ref_count(part, track, onset_tolerance)
            total += hits
            if assigned.get(i) == j:
                right += hits
    return {"multi_f1": float(per_part.mean()), "assignment_accuracy": float(right / total) if total else 0.0}


def _matched_ref_count(ref: np.ndarray, est: np.ndarray, onset_tolerance: float) -> int:
    import mir_eval

    ref, est = _as_notes(ref, "ref"), _as_notes(est, "est")
    if not len(ref) or not len(est):
        return 0
    return len(mir_eval.transcription.match_notes(*_mir_eval_notes(ref, est), onset_tolerance=onset_tolerance,
                                                  offset_ratio=None))


# ------------------------------------------------------------------------------------------------
# Spotify's basic-pitch as a peer: its shipped ONNX graph (pip install --no-deps basic-pitch), run
# on its own 2 s windows, decoded by the same Basic Pitch style decoder as ours.
BP_WINDOW = 43844
BP_OVERLAP_FRAMES = 30
BP_FRAMES_PER_WINDOW = 172


def basic_pitch_model_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("basic_pitch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("basic-pitch is not installed (pip install --no-deps basic-pitch==0.4.0)")
    return Path(list(spec.submodule_search_locations)[0]) / "saved_models" / "icassp_2022" / "nmp.onnx"


class BasicPitch:
    """basic-pitch's ONNX model with its windowing; notes in seconds."""

    def __init__(self, threads: int = 2) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(basic_pitch_model_path()), so, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def transcribe(self, audio_22k: np.ndarray, onset_threshold: float = 0.5, frame_threshold: float = 0.3,
                   min_note_frames: int = 11) -> np.ndarray:
        """audio (n,) float32 at 22050 Hz -> notes (k, 3) rows (start_s, end_s, pitch)."""
        from .notes import decode_notes

        overlap = BP_OVERLAP_FRAMES * 256
        hop = BP_WINDOW - overlap
        padded = np.concatenate([np.zeros(overlap // 2, np.float32), audio_22k.astype(np.float32)])
        n_olap = BP_OVERLAP_FRAMES // 2
        keep = BP_FRAMES_PER_WINDOW - 2 * n_olap
        notes_parts, onsets_parts = [], []
        for start in range(0, len(padded), hop):
            window = padded[start:start + BP_WINDOW]
            window = np.pad(window, (0, BP_WINDOW - len(window)))
            out = self.session.run(["StatefulPartitionedCall:1", "StatefulPartitionedCall:2"],
                                   {self.input: window[None, :, None]})
            notes_parts.append(out[0][0, n_olap:-n_olap])
            onsets_parts.append(out[1][0, n_olap:-n_olap])
        n_frames = int(np.floor(len(audio_22k) * (22050 // 256) / 22050))
        frame = np.concatenate(notes_parts)[:n_frames].T[3:87]     # MIDI 21..108 -> 24..107
        onset = np.concatenate(onsets_parts)[:n_frames].T[3:87]
        ev = decode_notes(np.ascontiguousarray(onset), np.ascontiguousarray(frame), onset_threshold,
                          frame_threshold, min_note_frames, 11)
        if not len(ev):
            return np.zeros((0, 3))

        def seconds(j):   # exact time of unwrapped frame j: its window's start plus its local frame
            w, local = np.divmod(j, keep)
            return (w * hop + (local + n_olap) * 256 - overlap // 2) / 22050.0
        return np.stack([seconds(ev["start"]), seconds(ev["end"]), ev["pitch"]], axis=1).astype(np.float64)


def evaluate_references(reference_dir: Path | None = None, models: Path | None = None,
                        reference_models: Path | None = None) -> list[dict]:
    """Every system on the shared reference examples (piano_short, three_mix, short_mix)."""
    from .audio import AudioStream
    from .transcribe import Transcriber, models_dir

    root = Path(__file__).resolve().parents[2]
    reference_dir = reference_dir or root.parent / "shared" / "data" / "reference"
    models = models or models_dir()
    reference_models = reference_models or root.parent / "shared" / "data" / "reference-models"
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
FRAME_HOP_SECONDS = 0.01
# The reference's own post-processing (noteDigger's workers): thresholds (onset, frame). It decodes
# whole songs in one run, so its graphs (which divide each map by its maximum) see the whole clip.
REFERENCE_THRESHOLDS = {"basicamt": (0.38, 0.22), "septimbre": (0.35, 0.31)}
WHOLE_CLIP_FRAMES = 4096                # > 30 s of frames: one window per evaluation clip
EVAL_SYSTEMS = ("basic-pitch", "reference basicamt", "reference notes + pitch k-means", "reference septimbre",
                "timbreamt basicamt", "timbreamt notes + pitch k-means", "timbreamt septimbre")
MIXTURE_CATEGORIES = ("2 instruments", "3 instruments", "4 instruments")
ONE_TRACK_SYSTEMS = ("basic-pitch", "reference basicamt", "timbreamt basicamt")   # no separation


def frame_scores(ref: np.ndarray, est: np.ndarray, hop_seconds: float = FRAME_HOP_SECONDS) -> dict[str, float]:
    """Frame-level precision/recall/F1 of two note lists rasterised on a (pitch, time) grid.

    ref, est: (n, 3) rows of (start_s, end_s, midi_pitch); a cell is active when a note covers its
    time (grid of ``hop_seconds``). Both empty score 1.0; one empty scores 0.0.
    """
    ref, est = _as_notes(ref, "ref"), _as_notes(est, "est")
    if hop_seconds <= 0:
        raise ValueError(f"hop_seconds must be positive, got {hop_seconds}")
    if len(ref) == 0 or len(est) == 0:
        v = 1.0 if len(ref) == len(est) else 0.0
        return {"precision": v, "recall": v, "f1": v}
    n_frames = int(np.ceil(max(ref[:, 1].max(), est[:, 1].max()) / hop_seconds)) + 1

    def roll(notes: np.ndarray) -> np.ndarray:
        r = np.zeros((128, n_frames), dtype=bool)
        for start, end, pitch in notes:
            r[int(round(pitch)), int(round(start / hop_seconds)):max(int(round(end / hop_seconds)),
                                                                    int(round(start / hop_seconds)) + 1)] = True
        return r

    r, e = roll(ref), roll(est)
    tp = float((r & e).sum())
    p = tp / max(e.sum(), 1)
    rec = tp / max(r.sum(), 1)
    return {"precision": p, "recall": rec, "f1": 2 * p * rec / (p + rec) if p + rec > 0 else 0.0}


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
        from .transcribe import Transcriber, models_dir

        root = Path(__file__).resolve().parents[2]
        models = models or models_dir()
        reference_models = reference_models or root.parent / "shared" / "data" / "reference-models"
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
            onset_t, frame_t = REFERENCE_THRESHOLDS[name]
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


def evaluate_set(clip_paths: list[Path], threads: int = 2, progress: bool = True) -> list[dict]:
    """Every system on every clip of an evaluation set; rows carry ``clip`` (file stem)."""
    from tqdm import tqdm

    from .data import load_clip

    if not clip_paths:
        raise ValueError("no evaluation clips")
    systems = EvalSystems(threads=threads)
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


def eval_chart(summary: list[dict], path: str | Path) -> None:
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
    ax.set_title(f"Held-out evaluation set ({summary[0]['clips'] if summary else 0} clips of 30 s, unheard music and programs)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="upper right")
    fig.tight_layout()
    fig.savefig(str(path))
    plt.close(fig)
