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
import math
import os
from pathlib import Path

import numpy as np

from ..core import constants as C
from ..core.errors import DataError, ModelError, OutputError, first_line
from ..core.resample import resample
from .data import list_clips, load_clip

MAP_NAMES = ("onset", "frame")
# ops a map passes through between its sigmoid and the graph output (the maximum division and reshapes)
_PASS_THROUGH = {"Unsqueeze", "Squeeze", "Div", "Identity", "Reshape", "Transpose"}
TEACHER_META = "teacher.json"
AUDIO_INPUT = "audio"             # the one input a teacher graph is fed
CALIBRATION_CELLS = 200_000     # cells per map (sampled over all clips) the calibration is fitted on
LOGIT_CLIP = 1e-4               # probabilities are kept in [1e-4, 1 - 1e-4] before their logit


def _sigmoid_before(graph, output: str, path: Path) -> str:
    """The name of the Sigmoid output a graph output is computed from, following first inputs back through
    the pass-through ops; ModelError when the output is not a scaled sigmoid."""
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
    raise ModelError(f"{path}: graph output {output!r} does not come from a sigmoid: not a note graph this teacher "
                     f"reads")


def probability_graph(model_path: str | Path) -> bytes:
    """The serialised graph of ``model_path`` with two more outputs, ``onset_probs`` and ``frame_probs``:
    the sigmoids its ``onset`` and ``frame`` outputs are scaled from. ModelError if the file is not an ONNX
    note graph: missing, a folder, unreadable, without such maps, or needing inputs other than ``audio``."""
    import onnx

    path = Path(model_path)
    if path.is_dir():
        raise ModelError(f"teacher graph {path} is a folder: give the .onnx file")
    if not path.is_file():
        raise ModelError(f"teacher graph not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:       # protobuf's DecodeError, an external-data file missing, ...
        raise ModelError(f"teacher graph {path} is not a readable ONNX file ({type(exc).__name__})") from None
    outputs = {o.name for o in model.graph.output}
    missing = [name for name in MAP_NAMES if name not in outputs]
    if missing:
        raise ModelError(f"{path} has no {' and '.join(missing)} output: not a note graph")
    # inputs with a default (initializers, like our graphs' crop) need not be fed; the teacher feeds audio only
    defaults = {init.name for init in model.graph.initializer}
    needed = [i.name for i in model.graph.input if i.name not in defaults]
    if needed != [AUDIO_INPUT]:
        raise ModelError(f"{path} takes the inputs {needed}: a teacher graph takes {AUDIO_INPUT!r} (44.1 kHz mono) "
                         f"alone")
    for name in MAP_NAMES:
        source = _sigmoid_before(model.graph, name, path)
        model.graph.node.append(onnx.helper.make_node("Identity", [source], [f"{name}_probs"]))
        model.graph.output.append(onnx.helper.make_tensor_value_info(f"{name}_probs", onnx.TensorProto.FLOAT, None))
    return model.SerializeToString()


class GraphTeacher:
    """A note graph (44.1 kHz audio in, 84 x frames maps out) read for its unscaled probabilities."""

    def __init__(self, model_path: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.model_path = Path(model_path)
        graph = probability_graph(model_path)
        try:
            self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except Exception as exc:      # onnxruntime's own errors (an invalid graph, an unknown op)
            raise ModelError(f"teacher graph {self.model_path} cannot be run: {first_line(exc, 200)}") from None

    def maps(self, audio: np.ndarray) -> np.ndarray:
        """Onset and frame probabilities (2, 84, frames) float32 of mono ``audio`` at constants.SAMPLE_RATE,
        on the frame grid of the labels (frame i centred at i * HOP samples); 0 for digital silence. ModelError
        when the graph fails on it or gives maps of another shape or non-finite values."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1 or audio.size < C.HOP:
            raise ValueError(f"audio must be mono with at least {C.HOP} samples, got shape {audio.shape}")
        n_frames = (len(audio) - 1) // C.HOP + 1
        out = np.zeros((2, C.N_PITCHES, n_frames), np.float32)
        if not audio.any():
            # the reference scales its input by its peak: on digital silence it returns NaN everywhere. Silence
            # holds no note, so its maps are 0 (a NaN map would make the calibration and the loss NaN)
            return out
        graph_audio = resample(audio, C.SAMPLE_RATE, C.GRAPH_SAMPLE_RATE).astype(np.float32)
        try:
            onset, frame = self.session.run(["onset_probs", "frame_probs"], {AUDIO_INPUT: graph_audio[None, None]})
        except Exception as exc:
            raise ModelError(f"teacher graph {self.model_path} failed: {first_line(exc, 200)}") from None
        for probs in (onset, frame):
            if probs.ndim < 2 or probs.shape[-2] != C.N_PITCHES or probs.size != C.N_PITCHES * probs.shape[-1]:
                raise ModelError(f"teacher graph {self.model_path} gives maps of shape {probs.shape}, not "
                                 f"(1, {C.N_PITCHES}, frames): not a note graph of {C.N_PITCHES} pitches")
        maps = np.stack([onset.reshape(C.N_PITCHES, -1), frame.reshape(C.N_PITCHES, -1)])
        if not np.isfinite(maps).all():
            raise ModelError(f"teacher graph {self.model_path} gives non-finite probabilities")
        n = min(n_frames, maps.shape[-1])
        out[:, :, :n] = maps[:, :, :n]
        return out


def teacher_path(teacher_dir: str | Path, clip_path: str | Path) -> Path:
    """Where the teacher maps of a clip are kept: the clip's file name in ``teacher_dir``."""
    return Path(teacher_dir) / Path(clip_path).name


def clip_fingerprint(clip_path: str | Path) -> str:
    """sha256 of a clip's file: its maps record it, so maps are never read against another clip of the same
    name (another data set's, or one rendered again in place)."""
    try:
        return hashlib.sha256(Path(clip_path).read_bytes()).hexdigest()
    except OSError as exc:
        raise DataError(f"unreadable clip {clip_path}: {exc.strerror or exc}") from None


def _clip_audio(clip_path: Path) -> np.ndarray:
    """The mono audio of a clip file as float32; DataError naming the clip when it has none usable."""
    clip = load_clip(clip_path)     # DataError when it is not a clip of `timbreamt data`
    audio = np.asarray(clip["audio"], dtype=np.float32)
    if audio.ndim != 1 or audio.size < C.HOP:
        raise DataError(f"clip {clip_path} holds no usable audio (shape {audio.shape}, at least {C.HOP} samples)")
    if not np.isfinite(audio).all():
        raise DataError(f"clip {clip_path} holds non-finite samples")
    return audio


def _read_maps(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a teacher map file, None when it is unreadable or lacks a map."""
    try:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception:
        return None
    return arrays if all(name in arrays for name in MAP_NAMES) else None


def _write_atomic(path: Path, write) -> None:
    """``write(tmp)`` then rename onto ``path``: a killed run never leaves a truncated file; OutputError when
    the folder cannot be written."""
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def _read_meta(meta_path: Path) -> dict:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{meta_path} is unreadable ({type(exc).__name__}): use a new folder for the maps") from None
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path} is not a teacher.json: use a new folder for the maps")
    return meta


def write_teacher_maps(data_dir: str | Path, out_dir: str | Path, model_path: str | Path, threads: int = 1,
                       progress: bool = True) -> int:
    """Compute the teacher maps of every clip of ``data_dir`` into ``out_dir`` (one ``.npz`` per clip, arrays
    ``onset`` and ``frame`` (84, frames) float16 and ``clip_sha256``, the fingerprint of the clip they were
    made from; and ``teacher.json`` naming the graph and its sha256, with the calibration).

    Resumable: the maps of a clip already done are kept, an unreadable one is made again, and the calibration
    is fitted again on every clip (a clip added since has its maps made and joins it). A folder made from
    another graph, or holding maps of other clips under the same names (another data set, clips rendered
    again), is refused before anything is computed. Returns the count of clips computed now."""
    from tqdm import tqdm

    clips = list_clips(data_dir)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file: give a folder for the teacher maps")
    if out.resolve() == Path(data_dir).resolve():
        raise OutputError(f"--out {out} is the data folder: the maps take the clips' names, give a folder of their own")
    teacher = GraphTeacher(model_path, threads)     # the graph is checked before anything is written
    digest = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()
    meta = {"teacher": str(Path(model_path).resolve()), "sha256": digest, "data": str(Path(data_dir).resolve())}
    meta_path = out / TEACHER_META
    if meta_path.exists():
        old = _read_meta(meta_path)
        if old.get("sha256") != digest:
            raise DataError(f"{out} holds maps of another teacher graph ({old.get('teacher')}): use a new folder")
    # which clips are done: refuse maps of other clips before computing anything
    todo = []
    for clip_path in clips:
        target = teacher_path(out, clip_path)
        arrays = _read_maps(target) if target.exists() else None
        if arrays is None:
            todo.append(clip_path)
            continue
        made_from = str(arrays["clip_sha256"]) if "clip_sha256" in arrays else None
        if made_from is not None and made_from != clip_fingerprint(clip_path):
            raise DataError(f"{out} holds maps of another {clip_path.name} than the one in {data_dir} (another data "
                            f"set, or clips rendered again): use a new folder for the maps")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob("*.partial.*"):       # what a killed run left
            stale.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write the teacher maps into {out}: {exc.strerror or exc}") from None
    # no calibration while maps are being made: a run killed now leaves a folder training refuses as unfinished
    _write_atomic(meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))
    for clip_path in tqdm(todo, disable=not progress, desc="teacher maps", unit="clip"):
        fingerprint = clip_fingerprint(clip_path)
        maps = teacher.maps(_clip_audio(clip_path)).astype(np.float16)
        _write_atomic(teacher_path(out, clip_path),
                      lambda tmp: np.savez(tmp, onset=maps[0], frame=maps[1], clip_sha256=np.array(fingerprint)))
    meta["calibration"] = fit_calibration(clips, out)
    meta["clips"] = len(clips)
    _write_atomic(meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))
    return len(todo)


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
    CALIBRATION_CELLS cells per map drawn evenly over the clips: {"onset": [a, b], "frame": [a, b]}.
    DataError when the labels leave nothing to calibrate against (no note, or no onset, in the cells drawn)."""
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
    calibration = {}
    for name in MAP_NAMES:
        try:
            calibration[name] = list(platt_fit(np.concatenate(probs[name]), np.concatenate(labels[name]) > 0.5))
        except ValueError as exc:
            raise DataError(f"cannot calibrate the teacher's {name} map on the clips of {Path(clips[0]).parent}: "
                            f"{exc}") from None
        if not all(math.isfinite(v) for v in calibration[name]):
            raise DataError(f"the calibration of the teacher's {name} map did not converge ({calibration[name]})")
    return calibration


def calibrate(maps: np.ndarray, calibration: dict[str, list[float]]) -> np.ndarray:
    """Teacher maps (..., 2, 84, frames) mapped through their calibration: float32 probabilities."""
    out = np.empty(maps.shape, np.float32)
    for i, name in enumerate(MAP_NAMES):
        a, b = calibration[name]
        out[..., i, :, :] = 1 / (1 + np.exp(-(a * _logit(maps[..., i, :, :]) + b)))
    return out


def read_calibration(teacher_dir: str | Path) -> dict[str, list[float]]:
    """The calibration kept in a teacher folder's teacher.json; DataError when the folder is unfinished or
    its teacher.json is unreadable."""
    meta_path = Path(teacher_dir) / TEACHER_META
    if not meta_path.is_file():
        raise DataError(f"{teacher_dir} holds no teacher maps ({TEACHER_META} missing)")
    calibration = _read_meta(meta_path).get("calibration")
    if not calibration:
        raise DataError(f"the teacher maps in {teacher_dir} are unfinished (no calibration): run "
                        f"`timbreamt teacher-maps` on it again")
    try:
        valid = all(len(calibration[name]) == 2 and all(math.isfinite(float(v)) for v in calibration[name])
                    for name in MAP_NAMES)
    except (KeyError, TypeError, ValueError):
        valid = False
    if not valid:
        raise DataError(f"the calibration in {meta_path} is not two finite numbers per map: run "
                        f"`timbreamt teacher-maps` into a new folder")
    return calibration


def load_teacher_maps(teacher_dir: str | Path, clip_path: str | Path, n_samples: int) -> np.ndarray:
    """The (2, 84, frames) float16 teacher maps of a clip of ``n_samples`` samples; DataError when missing,
    unreadable, of another length or made from another clip of that name (their ``clip_sha256``; maps made
    before it was recorded are read without that check)."""
    path = teacher_path(teacher_dir, clip_path)
    redo = (f"run `timbreamt teacher-maps --data {Path(clip_path).parent} --out DIR` into a new folder and train "
            f"with that")
    if not path.is_file():
        raise DataError(f"no teacher maps for {Path(clip_path).name} in {teacher_dir}: run "
                        f"`timbreamt teacher-maps --data {Path(clip_path).parent} --out {teacher_dir}`")
    arrays = _read_maps(path)
    if arrays is None:
        raise DataError(f"teacher maps {path} are unreadable: run `timbreamt teacher-maps --data "
                        f"{Path(clip_path).parent} --out {teacher_dir}` again (it makes them anew)")
    maps = np.stack([arrays["onset"], arrays["frame"]])
    n_frames = (n_samples - 1) // C.HOP + 1
    if maps.shape != (2, C.N_PITCHES, n_frames):
        raise DataError(f"teacher maps {path} have shape {maps.shape[1:]}, the clip needs (84, {n_frames}): maps of "
                        f"another data set? {redo}")
    if "clip_sha256" in arrays and str(arrays["clip_sha256"]) != clip_fingerprint(clip_path):
        raise DataError(f"teacher maps {path} were made from another {Path(clip_path).name} (another data set, or "
                        f"the clip rendered again): {redo}")
    return maps
