"""Distillation targets from a published note graph (issue 18, item 4): the reference's BasicAMT.

Why: the reference graphs were trained with real recordings and transcribe real instruments best of all
systems measured (issue 18's table), while our models learn only from renders. Their onset and frame
probabilities on our varied renders are a second target next to the labels (train --teacher-maps).

The reference graph divides each map by its own maximum before returning it, which turns a clip's weakest
evidence into full confidence and changes with the clip's length. The probabilities a note model learns from
are the sigmoids before that division, so the graph is read with those exposed as extra outputs
(``probability_graph``). The maps are computed once per training clip on the clean render and kept as
float16 ``.npz`` files in a folder of their own (``write_teacher_maps``): a crop of the audio then reads the
same frames of its clip's maps (train.ClipSampler), and augmentation changes the input only, so the student
learns to give on degraded audio what the teacher gives on clean audio.

The reference's probabilities follow its own label convention, not ours: on our renders its onset map is
0.04 at a labelled onset (median) and at most 0.17 in a typical clip, its frame map 0.27 inside a labelled
note. Matched as they are, they would pull against our labels. So each map is calibrated to our labels first
(Platt scaling, ``fit_calibration``: two numbers per map fitted on the training clips themselves, kept in
``teacher.json``): what is distilled is the teacher's evidence, in the probabilities our labels mean.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..core import constants as C
from ..core.errors import DataError
from ..core.resample import resample
from .data import list_clips, load_clip

MAP_NAMES = ("onset", "frame")
# ops a map passes through between its sigmoid and the graph output (the maximum division and reshapes)
_PASS_THROUGH = {"Unsqueeze", "Squeeze", "Div", "Identity", "Reshape", "Transpose"}
TEACHER_META = "teacher.json"
CALIBRATION_CELLS = 200_000     # cells per map (sampled over all clips) the calibration is fitted on
LOGIT_CLIP = 1e-4               # probabilities are kept in [1e-4, 1 - 1e-4] before their logit


def _sigmoid_before(graph, output: str) -> str:
    """The name of the Sigmoid output a graph output is computed from, following first inputs back through
    the pass-through ops; DataError when the output is not a scaled sigmoid."""
    producer = {out: node for node in graph.node for out in node.output}
    name = output
    for _ in range(32):
        node = producer.get(name)
        if node is None:
            break
        if node.op_type == "Sigmoid":
            return node.output[0]
        if node.op_type not in _PASS_THROUGH:
            break
        name = node.input[0]
    raise DataError(f"graph output {output!r} does not come from a sigmoid: not a note graph this teacher reads")


def probability_graph(model_path: str | Path) -> bytes:
    """The serialised graph of ``model_path`` with two more outputs, ``onset_probs`` and ``frame_probs``:
    the sigmoids its ``onset`` and ``frame`` outputs are scaled from. DataError if it has no such maps."""
    import onnx

    path = Path(model_path)
    if not path.is_file():
        raise DataError(f"teacher graph not found: {path}")
    model = onnx.load(str(path))
    outputs = {o.name for o in model.graph.output}
    missing = [name for name in MAP_NAMES if name not in outputs]
    if missing:
        raise DataError(f"{path} has no {' and '.join(missing)} output: not a note graph")
    for name in MAP_NAMES:
        source = _sigmoid_before(model.graph, name)
        model.graph.node.append(onnx.helper.make_node("Identity", [source], [f"{name}_probs"]))
        model.graph.output.append(onnx.helper.make_tensor_value_info(f"{name}_probs", onnx.TensorProto.FLOAT, None))
    return model.SerializeToString()


class GraphTeacher:
    """A note graph (44.1 kHz audio in, 84 x frames maps out) read for its unscaled probabilities."""

    def __init__(self, model_path: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.model_path = Path(model_path)
        self.session = ort.InferenceSession(probability_graph(model_path), options,
                                            providers=["CPUExecutionProvider"])

    def maps(self, audio: np.ndarray) -> np.ndarray:
        """Onset and frame probabilities (2, 84, frames) float32 of mono ``audio`` at constants.SAMPLE_RATE,
        on the frame grid of the labels (frame i centred at i * HOP samples)."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1 or audio.size < C.HOP:
            raise ValueError(f"audio must be mono with at least {C.HOP} samples, got shape {audio.shape}")
        graph_audio = resample(audio, C.SAMPLE_RATE, C.GRAPH_SAMPLE_RATE).astype(np.float32)
        onset, frame = self.session.run(["onset_probs", "frame_probs"], {"audio": graph_audio[None, None]})
        maps = np.stack([onset.reshape(C.N_PITCHES, -1), frame.reshape(C.N_PITCHES, -1)])
        n_frames = (len(audio) - 1) // C.HOP + 1
        out = np.zeros((2, C.N_PITCHES, n_frames), np.float32)
        n = min(n_frames, maps.shape[-1])
        out[:, :, :n] = maps[:, :, :n]
        return out


def teacher_path(teacher_dir: str | Path, clip_path: str | Path) -> Path:
    """Where the teacher maps of a clip are kept: the clip's file name in ``teacher_dir``."""
    return Path(teacher_dir) / Path(clip_path).name


def write_teacher_maps(data_dir: str | Path, out_dir: str | Path, model_path: str | Path, threads: int = 1,
                       progress: bool = True) -> int:
    """Compute the teacher maps of every clip of ``data_dir`` into ``out_dir`` (one ``.npz`` per clip, arrays
    ``onset`` and ``frame`` (84, frames) float16, and ``teacher.json`` naming the graph and its sha256).
    Clips already done are kept (resumable); a folder made from another graph is refused. Returns the count
    of clips computed now."""
    from tqdm import tqdm

    clips = list_clips(data_dir)
    if not clips:
        raise DataError(f"no clips in {data_dir}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(Path(model_path).read_bytes()).hexdigest() if Path(model_path).is_file() else ""
    meta = {"teacher": str(Path(model_path).resolve()), "sha256": digest, "data": str(Path(data_dir).resolve())}
    meta_path = out / TEACHER_META
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("sha256") != digest:
            raise DataError(f"{out} holds maps of another teacher graph ({old.get('teacher')}): use a new folder")
    teacher = GraphTeacher(model_path, threads)
    meta_path.write_text(json.dumps(meta, indent=1))
    done = 0
    for clip_path in tqdm(clips, disable=not progress, desc="teacher maps", unit="clip"):
        target = teacher_path(out, clip_path)
        if target.exists():
            continue
        maps = teacher.maps(load_clip(clip_path)["audio"].astype(np.float32)).astype(np.float16)
        partial = target.with_name(target.stem + ".partial.npz")
        np.savez(partial, onset=maps[0], frame=maps[1])
        partial.replace(target)       # a killed run never leaves a truncated map behind
        done += 1
    meta["calibration"] = fit_calibration(clips, out)
    meta_path.write_text(json.dumps(meta, indent=1))
    return done


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.log(p / (1 - p))


def platt_fit(teacher_probs: np.ndarray, labels: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """(a, b) of the logistic regression label ~ sigmoid(a * logit(p) + b) by Newton's method.

    teacher_probs, labels: (n,) arrays, probabilities in [0, 1] and 0/1 labels. ValueError on mismatched or
    one-class input (nothing to calibrate against)."""
    p, y = np.asarray(teacher_probs, np.float64).ravel(), np.asarray(labels, np.float64).ravel()
    if p.shape != y.shape or p.size == 0:
        raise ValueError(f"probabilities and labels must be non-empty and of one length, got {p.size} and {y.size}")
    if y.min() == y.max():
        raise ValueError("the labels hold one class only: there is nothing to calibrate against")
    x = np.stack([_logit(p), np.ones_like(p)], axis=1)
    w = np.zeros(2)
    for _ in range(iterations):
        q = 1 / (1 + np.exp(-(x @ w)))
        grad = x.T @ (q - y)
        hess = (x * (q * (1 - q))[:, None]).T @ x + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return float(w[0]), float(w[1])


def fit_calibration(clips: list[Path], teacher_dir: str | Path, seed: int = 0) -> dict[str, list[float]]:
    """Platt scaling of each teacher map against the clips' own labels (train.piano_rolls), from at most
    CALIBRATION_CELLS cells per map drawn evenly over the clips: {"onset": [a, b], "frame": [a, b]}."""
    from .data import piano_rolls

    rng = np.random.default_rng(seed)
    per_clip = max(1, CALIBRATION_CELLS // len(clips))
    probs: dict[str, list[np.ndarray]] = {name: [] for name in MAP_NAMES}
    labels: dict[str, list[np.ndarray]] = {name: [] for name in MAP_NAMES}
    for clip_path in clips:
        clip = load_clip(clip_path)
        maps = load_teacher_maps(teacher_dir, clip_path, len(clip["audio"]))
        rolls = piano_rolls(clip["notes"], maps.shape[-1])
        cells = rng.integers(maps[0].size, size=per_clip)
        for i, name in enumerate(MAP_NAMES):
            probs[name].append(maps[i].ravel()[cells])
            labels[name].append(rolls[name].ravel()[cells])
    return {name: list(platt_fit(np.concatenate(probs[name]), np.concatenate(labels[name]) > 0.5))
            for name in MAP_NAMES}


def calibrate(maps: np.ndarray, calibration: dict[str, list[float]]) -> np.ndarray:
    """Teacher maps (..., 2, 84, frames) mapped through their calibration: float32 probabilities."""
    out = np.empty(maps.shape, np.float32)
    for i, name in enumerate(MAP_NAMES):
        a, b = calibration[name]
        out[..., i, :, :] = 1 / (1 + np.exp(-(a * _logit(maps[..., i, :, :]) + b)))
    return out


def read_calibration(teacher_dir: str | Path) -> dict[str, list[float]]:
    """The calibration kept in a teacher folder's teacher.json; DataError when the folder is unfinished."""
    meta_path = Path(teacher_dir) / TEACHER_META
    if not meta_path.is_file():
        raise DataError(f"{teacher_dir} holds no teacher maps ({TEACHER_META} missing)")
    calibration = json.loads(meta_path.read_text()).get("calibration")
    if not calibration:
        raise DataError(f"the teacher maps in {teacher_dir} are unfinished (no calibration): run "
                        f"`timbreamt teacher-maps` on it again")
    return calibration


def load_teacher_maps(teacher_dir: str | Path, clip_path: str | Path, n_samples: int) -> np.ndarray:
    """The (2, 84, frames) float16 teacher maps of a clip of ``n_samples`` samples; DataError when missing or
    of another length."""
    path = teacher_path(teacher_dir, clip_path)
    if not path.is_file():
        raise DataError(f"no teacher maps for {Path(clip_path).name} in {teacher_dir}: run "
                        f"`timbreamt teacher-maps --data {Path(clip_path).parent} --out {teacher_dir}`")
    with np.load(path) as data:
        maps = np.stack([data["onset"], data["frame"]])
    n_frames = (n_samples - 1) // C.HOP + 1
    if maps.shape != (2, C.N_PITCHES, n_frames):
        raise DataError(f"teacher maps {path} have shape {maps.shape[1:]}, the clip needs (84, {n_frames})")
    return maps
