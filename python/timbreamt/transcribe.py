"""The transcription pipeline: audio -> ONNX model in windows -> notes -> tracks. No torch.

    >>> import timbreamt
    >>> result = timbreamt.transcribe("song.wav", instruments="auto")      # Transcription
    >>> result.to_json()

Works with our exported graphs and with any graph of the same contract (input ``audio`` (1, 1, n) at
44.1 kHz; outputs ``onset``, ``frame`` (1, 84, frames) and optionally ``embedding``), such as the
reference models (whose in-graph max division makes windows disagree slightly; ours do not).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from . import constants as C
from .audio import AudioStream, prepare_array
from .chunks import (CONTEXT_FRAMES, CORE_FRAMES, HOP_INPUT, INPUT_RATE, DecodeOptions, MapAccumulator, Window,
                     check_window_sizes, n_frames, window_crop)
from .errors import AudioError, ModelError
from .transcription import Transcription

MODEL_NAMES = ("basicamt", "septimbre")
# Thresholds for graphs that carry none in their metadata (the reference models: noteDigger's values)
FALLBACK_THRESHOLDS = {"basicamt": (0.38, 0.22), "septimbre": (0.35, 0.31)}
ARENA_SHRINKAGE = "memory.enable_memory_arena_shrinkage"     # onnxruntime run option


def models_dir() -> Path:
    """Where shipped models live: $TIMBREAMT_MODELS, else the repository's export/models."""
    env = os.environ.get("TIMBREAMT_MODELS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "export" / "models"


def default_model_path(name: str) -> Path:
    return models_dir() / f"{name}.onnx"


class Model:
    """An onnxruntime session of a graph of the contract, with its decoding defaults."""

    def __init__(self, model: str | Path = "septimbre", threads: int = 2) -> None:
        import onnxruntime as ort

        path = default_model_path(str(model)) if str(model) in MODEL_NAMES else Path(model)
        if not path.is_file():
            hint = " (restore the shipped graphs: `git checkout -- export/models`, or pass --model PATH)" if str(model) in MODEL_NAMES else ""
            raise ModelError(f"model file not found: {path}{hint}")
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
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
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"cannot load model {path}: {first}") from exc
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
        meta = self.session.get_modelmeta().custom_metadata_map
        kind = "septimbre" if self.has_embedding else "basicamt"
        self.name = meta.get("model", path.stem)
        onset_t, frame_t = FALLBACK_THRESHOLDS[kind]
        self.onset_threshold = float(meta.get("onset_threshold", onset_t))
        self.frame_threshold = float(meta.get("frame_threshold", frame_t))
        self.min_note_frames = int(meta.get("min_note_frames", C.MIN_NOTE_FRAMES))
        # the melodia pass (notes from frame activity without an onset) is calibrated per model
        self.melodia = meta.get("melodia", "1") != "0"
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


def _windows_from_stream(blocks: Iterable[np.ndarray], core_frames: int, context_frames: int):
    """Yield (window, samples) over a stream of 44.1 kHz blocks, keeping only what the next window
    needs in memory. The total length is found at the end of the stream, not trusted from a header."""
    check_window_sizes(core_frames, context_frames)
    buf = np.zeros(0, dtype=np.float32)
    buf_start = 0
    it = iter(blocks)
    eof = False
    core_start = 0
    while True:
        need_end = (core_start + core_frames + context_frames) * HOP_INPUT
        pieces = [buf]
        have = buf_start + len(buf)
        while not eof and have < need_end:
            try:
                block = next(it)
            except StopIteration:
                eof = True
                break
            pieces.append(block)
            have += len(block)
        if len(pieces) > 1:
            buf = np.concatenate(pieces)
        total = buf_start + len(buf)
        if eof:
            last_frame = n_frames(total)
            if core_start >= last_frame:
                return
            core_end = min(core_start + core_frames, last_frame)
        else:
            core_end = core_start + core_frames
        in_start = max(0, core_start - context_frames) * HOP_INPUT
        in_end = min(total, (core_end + context_frames) * HOP_INPUT)
        window = Window(in_start, in_end, core_start, core_end)
        yield window, buf[in_start - buf_start:in_end - buf_start], total, eof
        core_start = core_end
        drop = max(0, core_start - context_frames) * HOP_INPUT - buf_start
        if drop > 0:
            buf = buf[drop:]
            buf_start += drop


def _release_freed_memory() -> None:
    """Give freed heap pages back to the OS (glibc keeps them after each window's large buffers,
    which made peak RSS creep up by ~20 MB a window). A no-op where there is no glibc."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None


class Transcriber:
    """Holds a loaded model; transcribe files or arrays one after another."""

    def __init__(self, model: str | Path = "septimbre", threads: int = 2) -> None:
        self.model = Model(model, threads)

    def options(self, onset_threshold: float | None = None, frame_threshold: float | None = None,
                min_note_ms: float | None = None, melodia: bool | None = None) -> DecodeOptions:
        """Decoding options: the model's calibrated defaults, each overridable."""
        m = self.model
        min_frames = m.min_note_frames if min_note_ms is None else max(1, int(round(min_note_ms / 1000 * C.FRAMES_PER_SECOND)))
        opts = DecodeOptions(onset_threshold=m.onset_threshold if onset_threshold is None else onset_threshold,
                             frame_threshold=m.frame_threshold if frame_threshold is None else frame_threshold,
                             min_note_frames=min_frames, energy_tolerance=C.ENERGY_TOLERANCE,
                             melodia=m.melodia if melodia is None else bool(melodia))
        opts.validate()   # ValueError naming the bad option
        return opts

    def transcribe(self, audio: str | Path | np.ndarray, sr: int | None = None, instruments: int | str | None = "auto",
                   onset_threshold: float | None = None, frame_threshold: float | None = None,
                   min_note_ms: float | None = None, progress: Callable[[float], None] | None = None,
                   core_frames: int = CORE_FRAMES, context_frames: int = CONTEXT_FRAMES,
                   melodia: bool | None = None) -> Transcription:
        """Transcribe a file path, or an array (samples,) / (samples, channels) with its rate ``sr``.

        instruments: an int N >= 1, 'auto' (estimated) or None (one track). With a model without an
        embedding (basicamt) only one track is possible.
        progress: called with the fraction of audio done (0..1) after each window.
        melodia: add notes from frame activity that has no onset (None: the model's calibrated default).
        """
        if instruments not in (None, "auto") and (not isinstance(instruments, (int, np.integer)) or instruments < 1):
            raise ValueError(f"instruments must be a positive integer, 'auto' or None, got {instruments!r}")
        if not self.model.has_embedding:
            if isinstance(instruments, (int, np.integer)) and instruments > 1:
                raise ModelError(f"{self.model.name} has no timbre embedding: it cannot separate "
                                 f"{instruments} instruments (use the septimbre model)")
            instruments = None
        opts = self.options(onset_threshold, frame_threshold, min_note_ms, melodia)
        if isinstance(audio, (str, Path)):
            stream = AudioStream(audio, INPUT_RATE)
            sample_rate, blocks, expected = stream.sample_rate, iter(stream), stream.header_frames / stream.sample_rate
        else:
            if sr is None:
                raise ValueError("an audio array needs its sample rate: transcribe(array, sr=...)")
            samples = prepare_array(audio, sr, INPUT_RATE)
            sample_rate, blocks, expected = int(sr), iter([samples]), len(samples) / INPUT_RATE
            stream = None
        acc = MapAccumulator(opts, with_embedding=self.model.has_embedding and instruments is not None,
                             expected_frames=n_frames(int(expected * INPUT_RATE)))
        total = 0
        for window, chunk, total, eof in _windows_from_stream(blocks, core_frames, context_frames):
            # the convolutions only run where the core needs them (~25% of the work saved)
            crop = window_crop(window, n_frames(len(chunk)), acc.crop_margin) if self.model.can_crop else (0, 0)
            # the stream has ended: this is the last window or one of the last two
            maps = self.model.run(chunk, crop, release_memory=eof)
            acc.add(window, maps["onset"], maps["frame"], maps.get("embedding"), map_start=window.frame_start + crop[0])
            del maps
            _release_freed_memory()
            if progress and expected > 0:
                progress(min(1.0, window.in_end / INPUT_RATE / expected))
        if total == 0:
            where = f"{audio}: " if stream else ""
            raise AudioError(f"{where}audio is empty (0 samples)")
        return acc.finish(self.model.name, sample_rate, total / INPUT_RATE, instruments)


def transcribe(audio: str | Path | np.ndarray, sr: int | None = None, model: str | Path = "septimbre",
               instruments: int | str | None = "auto", onset_threshold: float | None = None,
               frame_threshold: float | None = None, min_note_ms: float | None = None, threads: int = 2,
               melodia: bool | None = None) -> Transcription:
    """Transcribe audio (a path, or an array with its sample rate ``sr``) into a Transcription."""
    return Transcriber(model, threads).transcribe(audio, sr, instruments, onset_threshold, frame_threshold, min_note_ms,
                                                  melodia=melodia)
