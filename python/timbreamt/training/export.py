"""ONNX export with guarantees: float32-safe EPS, finite outputs, torch parity, onnxruntime-web 1.18.

The exported graph follows the ONNX contract: input ``audio`` float32 (1, 1, samples) at 44100 Hz;
outputs ``onset``, ``frame`` (1, 84, frames) calibrated probabilities (no max division) and, for
Septimbre, ``embedding`` (1, 12, 84, frames). The 44.1 -> 22.05 kHz halving is a zero-phase FIR and a
stride-2 convolution inside the graph, so chunks must start at multiples of 2 * HOP input samples.
Every check raises ExportError; nothing is written unless all of them pass.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..core import constants as C
from ..core.errors import ExportError

OPSET = 17
MAX_OPSET = 20           # onnxruntime-web 1.18 (noteDigger) supports opsets up to 20
PARITY_TOLERANCE = 1e-4


def _wrapper(model):
    import torch
    from torch import nn

    from .cqt import HalfBandDecimator

    class Halve44100(nn.Module):
        """(1, 1, n) at 44100 Hz -> model outputs at 22050 Hz analysis rate."""

        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner
            self.halve = HalfBandDecimator()

        def forward(self, audio: torch.Tensor, crop: torch.Tensor | None = None):
            x = self.halve(audio)[:, 0]
            out = self.inner(x, crop=crop)
            names = ["onset", "frame", "embedding"]
            return tuple(out[k] for k in names if k in out)

    return Halve44100(model).eval()


def output_names(model_name: str) -> list[str]:
    return ["onset", "frame", "embedding"] if model_name == "septimbre" else ["onset", "frame"]


def export_model(model, model_name: str, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Export ``model`` (a trained BasicAMT/Septimbre in eval mode) to ``path`` and verify it.

    ``metadata`` (e.g. calibrated thresholds) is stored in the graph's metadata_props, where the
    runtime reads its decoding defaults. The graph is traced from a copy whose note heads are fused
    (NoteBranch.fuse_heads); the parity check compares it with ``model`` itself, unfused."""
    import copy

    import onnx
    import torch

    path = Path(path)
    reference = _wrapper(model)
    fused = copy.deepcopy(model).eval()
    fused.notes.fuse_heads()
    wrapper = _wrapper(fused)
    names = output_names(model_name)
    dummy = torch.randn(1, 1, C.GRAPH_SAMPLE_RATE * 3) * 0.1
    crop = torch.tensor([4, 8], dtype=torch.int64)       # non-zero, so tracing keeps it dynamic
    dynamic = {"audio": {2: "samples"}}
    for n in names:
        dynamic[n] = {(3 if n == "embedding" else 2): "frames"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        with torch.no_grad():
            torch.onnx.export(wrapper, (dummy, crop), str(raw), input_names=["audio", C.CROP_INPUT], output_names=names,
                              dynamic_axes=dynamic, opset_version=OPSET, dynamo=False, do_constant_folding=True)
        graph = onnx.load(str(raw))
        graph = simplify(graph)
        add_crop_default(graph)
        graph.producer_name = "timbreamt"
        meta = {"model": model_name, "onset_threshold": str(C.ONSET_THRESHOLD),
                "frame_threshold": str(C.FRAME_THRESHOLD), "min_note_frames": str(C.MIN_NOTE_FRAMES), "melodia": "1"}
        meta.update(metadata or {})
        del graph.metadata_props[:]
        for k, v in meta.items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = k, str(v)
        final = Path(tmp) / "final.onnx"
        onnx.save(graph, str(final))
        verify(final, model_name, torch_model=reference)
        tmp_out = path.with_suffix(".onnx.tmp")
        onnx.save(graph, str(tmp_out))
        os.replace(tmp_out, path)
    return path


def add_crop_default(graph) -> None:
    """Give the ``crop`` input a default [0, 0] (an initializer of the same name): the contract's
    only required input stays ``audio``, onnxruntime (Python) may override it, and callers that
    cannot (onnxruntime-web lists only required inputs and rejects others) get the whole window."""
    from onnx import numpy_helper

    if not any(i.name == C.CROP_INPUT for i in graph.graph.input):
        raise ExportError(f"the traced graph has no {C.CROP_INPUT!r} input")
    graph.graph.initializer.append(numpy_helper.from_array(np.zeros(2, np.int64), C.CROP_INPUT))


def simplify(graph):
    import onnxsim

    simplified, ok = onnxsim.simplify(graph)
    if not ok:
        raise ExportError("onnxsim could not validate the simplified graph")
    return simplified


def _initializers(graph) -> dict[str, np.ndarray]:
    """Constant tensors of a GraphProto by name (initializers and Constant nodes)."""
    from onnx import numpy_helper

    out = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(a.t)
    return out


def check_eps_guard(model) -> None:
    """(1) the first Log takes an Add whose constant is bit-equal to float32(EPS); every Log's input
    is guarded (Add of a positive constant, or a floor by Max/Where with a positive constant), so no
    log of an unguarded zero remains."""
    graph = model.graph
    consts = _initializers(graph)
    producers = {o: n for n in graph.node for o in n.output}
    logs = [n for n in graph.node if n.op_type == "Log"]
    if not logs:
        raise ExportError("no Log node in the graph: the energy normalisation is missing")
    eps_bits = np.float32(C.EPS).view(np.uint32)

    def positive_const(names) -> list[np.ndarray]:
        return [consts[n] for n in names if n in consts and consts[n].size == 1 and float(consts[n]) > 0]

    for i, log in enumerate(logs):
        src = producers.get(log.input[0])
        if src is None:
            raise ExportError(f"Log {log.name} reads a graph input directly: log of an unguarded zero")
        if i == 0:
            found = [c for c in positive_const(src.input)
                     if c.dtype == np.float32 and c.reshape(-1)[0].view(np.uint32) == eps_bits]
            if src.op_type != "Add" or not found:
                raise ExportError(f"the first Log does not take Add(energy, {C.EPS}) with the exact float32 "
                                  "constant: EPS was folded away or changed")
            continue
        guarded = (src.op_type in ("Add", "Max") and positive_const(src.input)) or \
                  (src.op_type == "Where" and positive_const(src.input[1:]))
        if not guarded:
            raise ExportError(f"Log {log.name} input comes from {src.op_type} with no positive floor")


def check_web_compatible(graph) -> None:
    """(4) opset <= 20, float32 only, explicit padding on every Conv/Pool."""
    import onnx

    for imp in graph.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > MAX_OPSET:
            raise ExportError(f"opset {imp.version} > {MAX_OPSET}: onnxruntime-web 1.18 cannot load it")
    allowed = {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.BOOL}
    for t in graph.graph.initializer:
        if t.data_type not in allowed:
            raise ExportError(f"initializer {t.name} has type {onnx.TensorProto.DataType.Name(t.data_type)}")
    defaults = {t.name for t in graph.graph.initializer}
    for v in list(graph.graph.input) + list(graph.graph.output):
        if v.name == C.CROP_INPUT and v.name in defaults and v.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            continue      # the optional crop (with its default), not part of the audio contract
        if v.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ExportError(f"graph input/output {v.name} is not float32")
    for node in graph.graph.node:
        for a in node.attribute:
            if a.name == "auto_pad" and a.s not in (b"", b"NOTSET"):
                raise ExportError(f"{node.op_type} {node.name} uses auto_pad={a.s.decode()}: pad explicitly")
            if a.name == "to" and a.i not in allowed:
                raise ExportError(f"Cast {node.name} to a non-float32 type")


def check_ort_optimised_keeps_eps(path: Path) -> None:
    """onnxruntime's own optimiser must keep the EPS Add too (some versions fold 1e-8 as zero)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opt_path = Path(tmp) / "ort_opt.onnx"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.log_severity_level = 3
        so.optimized_model_filepath = str(opt_path)
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        check_eps_guard(onnx.load(str(opt_path)))


def probe_signals(seconds: float, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = int(seconds * C.GRAPH_SAMPLE_RATE)
    t = np.arange(n) / C.GRAPH_SAMPLE_RATE
    return {
        "silence": np.zeros(n, np.float32),
        "noise_full_scale": rng.uniform(-1, 1, n).astype(np.float32),
        "noise_1e-5": (rng.standard_normal(n) * 1e-5).astype(np.float32),
        "chord": (0.2 * (np.sin(2 * np.pi * 261.63 * t) + np.sin(2 * np.pi * 329.63 * t)
                         + np.sin(2 * np.pi * 392.0 * t))).astype(np.float32),
    }


def verify(path: str | Path, model_name: str, torch_model=None) -> dict[str, float]:
    """Run every check on an exported graph; returns measured figures (max torch/ORT difference)."""
    import onnx
    import onnxruntime as ort

    path = Path(path)
    graph = onnx.load(str(path))
    check_eps_guard(graph)
    check_web_compatible(graph)
    check_ort_optimised_keeps_eps(path)
    names = output_names(model_name)
    got = [o.name for o in graph.graph.output]
    if got != names:
        raise ExportError(f"outputs are {got}, the contract says {names}")
    figures = {"max_abs_diff": 0.0}
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        so.log_severity_level = 3      # not the expected "initializer crop appears in graph inputs"
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        cases = {f"{k}_1s": v for k, v in probe_signals(1.0).items()}
        cases["one_frame"] = np.zeros(100, np.float32)
        cases["chord_30s"] = probe_signals(30.0)["chord"]
        cases["noise_30s"] = probe_signals(30.0)["noise_full_scale"]
        for case, audio in cases.items():
            outs = sess.run(None, {"audio": audio[None, None]})
            for n, o in zip(names, outs):
                if not np.isfinite(o).all():
                    raise ExportError(f"{n} is not finite on {case} (optimisation level {level})")
            if torch_model is not None and case in ("chord_1s", "noise_full_scale_1s", "chord_30s"):
                import torch

                with torch.no_grad():
                    ref = torch_model(torch.from_numpy(audio)[None, None])
                for n, o, r in zip(names, outs, ref):
                    diff = float(np.abs(o - r.numpy()).max())
                    figures["max_abs_diff"] = max(figures["max_abs_diff"], diff)
                    if diff >= PARITY_TOLERANCE:
                        raise ExportError(f"torch and onnxruntime differ by {diff:.2e} on {n} ({case})")
        figures["crop_max_abs_diff"] = check_crop(sess, names, cases["chord_30s"])
    return figures


def check_crop(sess, names: list[str], audio: np.ndarray) -> float:
    """Feeding ``crop`` must drop exactly those frames and change no kept frame farther than the
    runtime's CROP_MARGIN_FRAMES from a cut; returns the largest difference there."""
    from ..core.constants import CROP_MARGIN_FRAMES

    full = sess.run(None, {"audio": audio[None, None]})
    c0, c1 = 128, 64
    cut = sess.run(None, {"audio": audio[None, None], C.CROP_INPUT: np.array([c0, c1], np.int64)})
    worst = 0.0
    for n, f, c in zip(names, full, cut):
        if c.shape[-1] != f.shape[-1] - c0 - c1:
            raise ExportError(f"crop [{c0}, {c1}] gives {c.shape[-1]} frames of {n}, expected {f.shape[-1] - c0 - c1}")
        m = CROP_MARGIN_FRAMES
        worst = max(worst, float(np.abs(c[..., m:-m] - f[..., c0 + m: f.shape[-1] - c1 - m]).max()))
    if worst >= PARITY_TOLERANCE:
        raise ExportError(f"cropped frames differ from the whole window's by {worst:.2e}")
    return worst


def export_run(run: str | Path, out_dir: str | Path, name: str | None = None,
               decoding: dict | None = None, notes_from: str | Path | None = None) -> list[Path]:
    """Export the best checkpoint of a training run to ``out_dir/<name>.onnx``; ``decoding``
    ({'onset_threshold', 'frame_threshold', 'melodia'}, from calibration) becomes the graph's decoding
    defaults. ``notes_from``: a BasicAMT run whose front
    end and note branch replace a Septimbre's (its timbre encoder is independent of them)."""
    from ..core.errors import DataError
    from .models import build_model
    from .checkpoints import load_basicamt_checkpoint, load_checkpoint, load_note_weights, model_from_checkpoint, note_shape

    ckpt = load_checkpoint(run)
    model_name = ckpt["config"]["model"]
    model = model_from_checkpoint(run)
    meta = {"epoch": str(ckpt.get("epoch", -1) + 1)}
    if notes_from:
        if model_name != "septimbre":
            raise DataError("--notes-from applies to a septimbre run")
        notes_ckpt = load_basicamt_checkpoint(notes_from)
        # the encoder from the run, the front end and note branch (of any shape) from notes_from
        encoder = {k: v for k, v in model.state_dict().items() if k.startswith("timbre.")}
        model = build_model("septimbre", **note_shape(notes_ckpt))
        model.load_state_dict(encoder, strict=False)
        load_note_weights(model, notes_ckpt, notes_from)
        model.eval()
        meta["notes_epoch"] = str(notes_ckpt.get("epoch", -1) + 1)
    meta["conv2_rank"] = str(model.notes.conv2_rank)
    meta["conv_kernel"] = str(model.notes.conv_kernel)
    meta["neck_kernel"] = str(model.notes.neck_kernel)
    meta["neck_bins"] = str(model.notes.neck_bins)
    meta["conv2_order"] = "time-first" if model.notes.conv2_time_first else "freq-first"
    if decoding:
        meta.update(onset_threshold=f"{decoding['onset_threshold']:.3f}",
                    frame_threshold=f"{decoding['frame_threshold']:.3f}", melodia="1" if decoding["melodia"] else "0")
    return [export_model(model, model_name, Path(out_dir) / f"{name or model_name}.onnx", meta)]
