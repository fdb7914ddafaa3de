"""An onnxruntime session of a graph of the timbreamt ONNX contract (input ``audio`` (1, 1, n) at 44.1 kHz;
outputs ``onset``, ``frame`` (1, 84, frames) and optionally ``embedding``), with its metadata. No torch."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core import constants as C
from ..core.constants import MAX_THREADS
from ..core.contract import check_count, decode_options
from ..core.errors import ModelError, first_line

MODEL_NAMES = ("basicamt", "septimbre")
ARENA_SHRINKAGE = "memory.enable_memory_arena_shrinkage"     # onnxruntime run option


def models_dir() -> Path:
    """Where the shipped models live: $TIMBREAMT_MODELS, else the package data ``timbreamt.models``
    (the wheel ships export/models there), else the checkout's export/models: the package imported from
    python/, or an editable install (setuptools' editable finder cannot map a data-only subpackage
    without an __init__.py to another folder, so there the checkout's path is the one that works)."""
    env = os.environ.get("TIMBREAMT_MODELS")
    if env:
        return Path(env)
    try:
        from importlib.resources import files

        packaged = files("timbreamt.models")
        # a folder on disk (installed wheel or editable install); onnxruntime needs a real path
        if isinstance(packaged, Path) and packaged.is_dir():
            return packaged
        for candidate in getattr(packaged, "_paths", ()):   # a namespace package: MultiplexedPath
            if Path(candidate).is_dir():
                return Path(candidate)
    except (ImportError, TypeError, ValueError):
        pass
    return Path(__file__).resolve().parents[3] / "export" / "models"


def default_model_path(name: str) -> Path:
    return models_dir() / f"{name}.onnx"


class Model:
    """An onnxruntime session of a graph of the contract, with its decoding defaults."""

    def __init__(self, model: str | Path = "septimbre", threads: int = 2) -> None:
        import onnxruntime as ort

        threads = check_count(threads, "threads", MAX_THREADS)
        named = os.fsdecode(model) in MODEL_NAMES
        path = default_model_path(os.fsdecode(model)) if named else Path(os.fsdecode(model))
        if not path.is_file():
            hint = (" (the shipped graphs are missing: reinstall timbreamt, restore export/models in a checkout, "
                    "set $TIMBREAMT_MODELS, or pass --model PATH)") if named else ""
            raise ModelError(f"model file not found: {path}{hint}")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        # ORT's arena lets the operators of a run reuse each other's buffers; without it every large
        # activation is a fresh mmap whose pages the kernel faults in and zeroes again. Kept for the
        # whole file it grows with the file's length, so it is shrunk after each window. Measured on
        # 30 min of Septimbre (auto), 2 threads, back to back: no arena 32.4 s, 3.5 M page faults,
        # peak 299 MiB; arena kept 28.6 s, 318 MiB; arena shrunk after each window 30.1 s, 236 MiB.
        # The note-only graph is the other way round: its arena stays bounded by one window (60 min
        # of BasicAMT, 2 threads, the windows alone: kept 21.2 s, 232 MiB; shrunk 27.9 s, 225 MiB),
        # so it is kept there (`shrink_arena`, set once the outputs are known below). Either way the
        # last window of a file shrinks it, so decoding (two copies of the frame map) does not stack
        # on top of it: 60 min of BasicAMT, whole pipeline, peaked at 278 MiB with the arena kept to
        # the end, 230 MiB with the last window shrinking it.
        so.enable_cpu_mem_arena = True
        so.enable_mem_pattern = False
        self.run_options = ort.RunOptions()
        self.release_options = ort.RunOptions()
        self.release_options.add_run_config_entry(ARENA_SHRINKAGE, "cpu:0")
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelError(f"cannot load model {path}: {first_line(exc, 200)}") from exc
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != ["audio"] or outputs[:2] != ["onset", "frame"]:
            raise ModelError(f"{path} does not follow the timbreamt ONNX contract "
                             f"(inputs {inputs}, outputs {outputs})")
        self.path = path
        self.has_embedding = "embedding" in outputs
        self.shrink_arena = self.has_embedding
        if self.shrink_arena:
            self.run_options.add_run_config_entry(ARENA_SHRINKAGE, "cpu:0")
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.name = self.metadata.get("model", path.stem)
        self.defaults = decode_options(self.metadata, self.has_embedding)   # the graph's calibrated decoding
        # our graphs take an optional crop (frames to skip before the convolutions); others do not
        self.can_crop = any(i.name == C.CROP_INPUT for i in self.session.get_overridable_initializers())

    def run(self, audio: np.ndarray, crop: tuple[int, int] = (0, 0), release_memory: bool = False) -> dict[str, np.ndarray]:
        """audio (n,) float32 at 44.1 kHz -> {'onset','frame': (84, F), 'embedding': (12, 84, F)};
        crop (start, end): frames the graph drops before its convolutions (needs ``can_crop``);
        release_memory: give onnxruntime's working memory back after this run (a file's last window)."""
        feeds = {"audio": np.ascontiguousarray(audio, dtype=np.float32)[None, None]}
        if crop != (0, 0):
            if not self.can_crop:
                raise ModelError(f"{self.path} has no crop input")
            feeds[C.CROP_INPUT] = np.asarray(crop, dtype=np.int64)
        outs = self.session.run(None, feeds, self.release_options if release_memory else self.run_options)
        names = [o.name for o in self.session.get_outputs()]
        return {n: o[0] for n, o in zip(names, outs)}
