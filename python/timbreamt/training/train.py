"""Training loop for BasicAMT and Septimbre: CPU (2 cores) or CUDA, resumable, DDP-ready.

Run directory layout: ``last.pt`` (model + optimiser + scheduler + counters, written atomically each
epoch), ``best.pt`` (best validation note F1), ``log.jsonl`` (one line per epoch), ``config.json``.
Many GPUs: ``torchrun --nproc_per_node G -m timbreamt train ...`` sets WORLD_SIZE/RANK/LOCAL_RANK;
the loop then wraps the model in DistributedDataParallel, gives each rank its own sampling seed and
lets rank 0 alone validate and write checkpoints.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..core import constants as C
from .data import add_source, list_clips, load_clip, piano_rolls, scale_peak
from .sources import SYNTH_PROGRAM_BASE
from ..core.errors import DataError
from .losses import distillation_loss, info_nce, note_loss
from .teacher import calibrate, load_teacher_maps, read_calibration
from .checkpoints import (atomic_save, load_basicamt_checkpoint, load_checkpoint, load_note_weights, model_from_checkpoint,
                          note_shape, shape_flags)
from .models import build_model, count_parameters


@dataclass
class TrainConfig:
    model: str = "basicamt"
    epochs: int = 30
    steps_per_epoch: int = 100
    batch_size: int = 8
    segment_seconds: float = 5.0
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    noise_prob: float = 0.5
    init_from: str = ""            # septimbre: BasicAMT checkpoint for the note branch (frozen);
                                   # basicamt: a checkpoint to start from (fine-tuning)
    conv2_rank: int = 0            # note branch conv2: 0 full (the paper's), else low rank (models.LowRankConv)
    conv_kernel: int = 5           # note branch conv1 and neck: 5 x 5 (the paper's) or 3 x 3
    neck_kernel: int = 0           # the neck's alone: 3 or 5 (0: conv_kernel)
    neck_bins: int = 252           # note branch rows after conv2: 252 (the paper's) or 84 (one per pitch)
    conv2_time_first: bool = False  # low-rank conv2: its time convolution first
    val_clips: int = 24
    threads: int = 2
    # septimbre: share of examples mixed on the fly from 2-4 solo clips of different programs (new
    # instrument combinations every step, instead of the fixed mixtures rendered once)
    dynamic_mix: float = 0.0
    # septimbre: share of those dynamic mixtures that are hard (issue 18): the first two sources are
    # different instruments of one family (GM program // 8, or one procedural family, whose every clip is a
    # new instrument) whose registers overlap, where pitch cannot tell them apart
    hard_mix: float = 0.0
    # septimbre: share of notes whose silent 2nd and 3rd harmonic cells (+12, +19 semitones) are labelled
    # with the note's part. Why: the note branch's ghost notes sit there, and two ghosts unlike every real
    # note took a cluster of their own on three_mix (its whole 0.857 -> 0.480 drop on the v0.6.0 branch)
    harmonic_labels: float = 0.0
    # septimbre: a Septimbre run or checkpoint whose timbre encoder the run starts from (fine-tuning it on
    # the --init-from note branch)
    encoder_from: str = ""
    # basicamt: a trained BasicAMT run or checkpoint whose onset and frame probabilities the model also
    # learns to match (knowledge distillation, weight ``distill`` against the label loss's 1). Why: a
    # cheaper note branch trained on labels alone ended below the larger one it started from (tried on
    # the 3 x 3 time-first branch: no gain, see the model card)
    teacher: str = ""
    # basicamt: a folder of teacher maps of the training clips (`timbreamt teacher-maps`, training/teacher.py:
    # the reference's published graph, calibrated to our labels), matched with weight ``distill``
    teacher_maps: str = ""
    distill: float = 1.0
    # 'basic': gain, tilt and white noise (v0.5.0's); 'full': then EQ, compression, band-limiting and
    # coloured noise, each with probability 0.3 (training/augment.py)
    augment: str = "basic"

    def note_shape(self) -> dict:
        """The note branch's shape asked for, as build_model's keywords."""
        return {"conv2_rank": self.conv2_rank, "conv_kernel": self.conv_kernel, "neck_bins": self.neck_bins,
                "conv2_time_first": self.conv2_time_first, "neck_kernel": self.neck_kernel or self.conv_kernel}


class ClipSampler:
    """Random training crops from a folder of clips (kept in memory as float16)."""

    def __init__(self, data_dir: str | Path, segment_seconds: float, rng: np.random.Generator,
                 multi_part_only: bool = False, dynamic_mix: float = 0.0, augment_mode: str = "basic",
                 hard_mix: float = 0.0, harmonic_labels: float = 0.0, teacher_maps: str | Path = "") -> None:
        for name, share in (("--dynamic-mix", dynamic_mix), ("--hard-mix", hard_mix),
                            ("--harmonic-labels", harmonic_labels)):
            if not 0.0 <= share <= 1.0:
                raise DataError(f"{name} must be a share between 0 and 1, got {share}")
        if hard_mix > 0 and dynamic_mix <= 0:
            raise DataError("--hard-mix is a share of the dynamic mixtures: it needs --dynamic-mix > 0")
        paths = list_clips(data_dir)
        clips = [load_clip(p) for p in paths]
        # distillation targets (training/teacher.py): each clip's calibrated teacher maps, cropped with it
        self.teacher_calibration = read_calibration(teacher_maps) if teacher_maps else None
        if teacher_maps:
            if dynamic_mix > 0:
                raise DataError("--teacher-maps holds maps of the rendered clips: it cannot be used with "
                                "--dynamic-mix (mixtures made on the fly have none)")
            for path, clip in zip(paths, clips):
                clip["teacher"] = load_teacher_maps(teacher_maps, path, len(clip["audio"]))
        self.clips = clips
        self.solo = [c for c in clips if len(c["programs"]) == 1] if dynamic_mix > 0 else []
        self.solo_programs = len({int(c["programs"][0]) for c in self.solo})
        if multi_part_only:
            self.clips = [c for c in clips if len(c["programs"]) > 1]
            if not self.clips:
                raise DataError(f"no multi-instrument clips in {data_dir}: Septimbre needs mixtures")
        if dynamic_mix > 0 and self.solo_programs < 2:
            raise DataError(f"dynamic mixing needs solo clips of at least two programs in {data_dir}")
        self.dynamic_mix = dynamic_mix
        self.hard_mix = hard_mix
        self.harmonic_labels = harmonic_labels
        # who plays each solo clip, its family and register (for the hard mixtures)
        self.solo_identity = [timbre_identity(c, i) for i, c in enumerate(self.solo)]
        self.solo_family = [timbre_family(int(c["programs"][0])) for c in self.solo]
        self.solo_register = [register_of(c["notes"]) for c in self.solo]
        if augment_mode not in AUGMENT_MODES:
            raise DataError(f"--augment must be one of {', '.join(AUGMENT_MODES)}, got {augment_mode!r}")
        self.augment_mode = augment_mode
        self.segment = int(segment_seconds * C.SAMPLE_RATE) // C.HOP * C.HOP
        self.rng = rng

    def _crop(self, clip: dict) -> tuple[np.ndarray, np.ndarray, int]:
        """A random segment of a clip, its notes (pitch, start_s, end_s, part) relative to it, and its start
        (samples, a whole number of hops)."""
        audio = clip["audio"].astype(np.float32)
        max_start = max(0, len(audio) - self.segment) // C.HOP
        start = int(self.rng.integers(max_start + 1)) * C.HOP
        seg = np.zeros(self.segment, dtype=np.float32)
        piece = audio[start:start + self.segment]
        seg[:len(piece)] = piece
        notes = clip["notes"].copy()
        notes[:, 1:3] -= start / C.SAMPLE_RATE
        return seg, notes, start

    def _teacher_crop(self, clip: dict, start: int, n_frames: int) -> np.ndarray:
        """The teacher maps (2, 84, n_frames) of the frames a crop starting at ``start`` covers (0 past the
        clip's end)."""
        out = np.zeros((2, C.N_PITCHES, n_frames), np.float16)
        piece = clip["teacher"][:, :, start // C.HOP:start // C.HOP + n_frames]
        out[:, :, :piece.shape[-1]] = piece
        return out

    def _dynamic_mixture(self) -> tuple[np.ndarray, np.ndarray]:
        """2-4 solo crops of different programs summed with random gains; part = source index. A share
        ``hard_mix`` of them starts with a hard pair instead (see _hard_sources)."""
        n = int(self.rng.integers(2, 5))
        if self.hard_mix > 0 and self.rng.random() < self.hard_mix:
            chosen = [self.solo[i] for i in self._hard_sources(n)]
        else:
            chosen, programs = [], set()
            while len(chosen) < n and len(programs) < self.solo_programs:
                clip = self.solo[int(self.rng.integers(len(self.solo)))]
                if int(clip["programs"][0]) not in programs:
                    programs.add(int(clip["programs"][0]))
                    chosen.append(clip)
        mix = np.zeros(self.segment, dtype=np.float32)
        rows = []
        for k, clip in enumerate(chosen):
            seg, notes, _ = self._crop(clip)
            add_source(mix, seg, self.rng, (0.3, 1.0))      # the gains of the rendered mixtures
            notes[:, 3] = k
            rows.append(notes)
        scale_peak(mix, self.rng, (0.2, 0.95))
        return mix, np.concatenate(rows)

    def _hard_sources(self, n: int) -> list[int]:
        """Indices of up to ``n`` solo clips of different instruments (timbre_identity): a random first
        one, then its hardest partner (same family and overlapping register, else same family, else
        overlapping register, else any other instrument), then random others."""
        first = int(self.rng.integers(len(self.solo)))
        ident, family, register = self.solo_identity[first], self.solo_family[first], self.solo_register[first]
        others = [j for j in range(len(self.solo)) if self.solo_identity[j] != ident]
        if not others:
            return [first]
        same = [j for j in others if self.solo_family[j] == family]
        near = {j for j in others if registers_overlap(register, self.solo_register[j])}
        both = [j for j in same if j in near]
        pool = both or same or sorted(near) or others
        chosen = [first, pool[int(self.rng.integers(len(pool)))]]
        used = {self.solo_identity[j] for j in chosen}
        for _ in range(HARD_MIX_DRAWS):
            if len(chosen) >= n:
                break
            j = int(self.rng.integers(len(self.solo)))
            if self.solo_identity[j] not in used:
                used.add(self.solo_identity[j])
                chosen.append(j)
        return chosen

    def batch(self, size: int, noise_prob: float) -> dict[str, torch.Tensor]:
        audios, frames, onsets, parts, teachers = [], [], [], [], []
        n_frames = (self.segment - 1) // C.HOP + 1
        for _ in range(size):
            if self.dynamic_mix > 0 and self.rng.random() < self.dynamic_mix:
                seg, notes = self._dynamic_mixture()
            else:
                clip = self.clips[int(self.rng.integers(len(self.clips)))]
                seg, notes, start = self._crop(clip)
                if self.teacher_calibration is not None:
                    teachers.append(self._teacher_crop(clip, start, n_frames))
            seg = augment(seg, self.rng, noise_prob)
            if self.augment_mode == "full":
                from .augment import random_chain

                seg = random_chain(seg, self.rng, FULL_AUGMENT_PROB)
            if self.rng.random() < 0.04:   # digital silence or faint noise: no notes
                seg = (self.rng.standard_normal(len(seg)) * self.rng.choice([0.0, 1e-5, 1e-3])).astype(np.float32)
                notes = notes[:0]
                if teachers:           # nor any the teacher heard
                    teachers[-1] = np.zeros_like(teachers[-1])
            rolls = piano_rolls(notes, n_frames)
            if self.harmonic_labels > 0:
                rolls["part"] = label_harmonics(rolls["part"], notes, n_frames, self.rng, self.harmonic_labels)
            audios.append(seg)
            frames.append(rolls["frame"])
            onsets.append(rolls["onset"])
            parts.append(rolls["part"])
        batch = {"audio": torch.from_numpy(np.stack(audios)), "frame": torch.from_numpy(np.stack(frames)),
                 "onset": torch.from_numpy(np.stack(onsets)),
                 "part": torch.from_numpy(np.stack(parts).astype(np.int64))}
        if teachers:
            maps = calibrate(np.stack(teachers), self.teacher_calibration)
            batch["teacher_onset"] = torch.from_numpy(maps[:, 0])
            batch["teacher_frame"] = torch.from_numpy(maps[:, 1])
        return batch


AUGMENT_MODES = ("basic", "full")
FULL_AUGMENT_PROB = 0.3
HARD_MIX_DRAWS = 50           # random draws for a hard mixture's sources after its pair (then it has fewer)
MIN_REGISTER_OVERLAP = 3      # semitones two clips' registers share to count as overlapping (crossing parts)
HARMONIC_INTERVALS = (12, 19)  # semitones above a note: its 2nd and 3rd harmonics, where ghost notes sit


def timbre_identity(clip: dict, index: int) -> tuple:
    """Who plays a solo clip, for "different instruments": a GM program (the two training soundfonts
    sound alike on most programs, so the soundfont does not make a new instrument), or for a
    procedural part the clip itself (every rendered clip draws a new instrument of its family)."""
    program = int(clip["programs"][0])
    return ("procedural", index) if program >= SYNTH_PROGRAM_BASE else ("gm", program)


def timbre_family(program: int) -> int:
    """GM family (program // 8) or, for a procedural part, its program (one per synthesis family)."""
    return program if program >= SYNTH_PROGRAM_BASE else program // 8


def register_of(notes: np.ndarray) -> tuple[float, float]:
    """The pitch range (10th, 90th percentile, MIDI) of a clip's notes (n, 4); (nan, nan) without notes."""
    if not len(notes):
        return float("nan"), float("nan")
    lo, hi = np.percentile(notes[:, 0], [10, 90])
    return float(lo), float(hi)


def registers_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """True when two registers share at least MIN_REGISTER_OVERLAP semitones (or the narrower one sits
    inside the other)."""
    shared = min(a[1], b[1]) - max(a[0], b[0])
    return bool(shared >= min(MIN_REGISTER_OVERLAP, a[1] - a[0], b[1] - b[0]) and shared >= 0)


def label_harmonics(part: np.ndarray, notes: np.ndarray, n_frames: int, rng: np.random.Generator,
                    share: float) -> np.ndarray:
    """The part roll (84, T) int16 with the silent cells (-1) at HARMONIC_INTERVALS above a random
    ``share`` of the notes (n, 4) labelled with that note's part (-2 where the harmonics of two parts
    meet). Cells of real notes keep their labels; the frame and onset targets are not touched."""
    picked = notes[rng.random(len(notes)) < share]
    if not len(picked):
        return part
    shifted = np.concatenate([picked + np.array([iv, 0, 0, 0], dtype=notes.dtype) for iv in HARMONIC_INTERVALS])
    harmonic = piano_rolls(shifted, n_frames)["part"]
    out = part.copy()
    free = out == -1
    out[free] = harmonic[free]
    return out


def augment(audio: np.ndarray, rng: np.random.Generator, noise_prob: float) -> np.ndarray:
    """Random gain, spectral tilt (one-pole EQ) and Gaussian noise."""
    out = audio * 10 ** rng.uniform(-2, 0.3)
    if rng.random() < 0.5:   # tilt: mix of the signal and its first difference / running mean
        a = rng.uniform(-0.5, 0.5)
        diff = np.concatenate([[0.0], np.diff(out)]).astype(np.float32)
        out = out + a * diff
    if rng.random() < noise_prob:
        rms = float(np.sqrt(np.mean(out ** 2)) + 1e-8)
        snr_db = rng.uniform(10, 40)
        out = out + rng.normal(0, rms / 10 ** (snr_db / 20), out.shape).astype(np.float32)
    return np.clip(out, -1, 1).astype(np.float32)


def _device() -> torch.device:
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else torch.device("cpu")


def _teacher_key(teacher: str, teacher_maps: str, distill: float) -> tuple[str, str, float]:
    """A distillation set-up, comparable across command lines (a path given relative or absolute)."""
    if not (teacher or teacher_maps):
        return "", "", 0.0
    return (str(Path(teacher).resolve()) if teacher else "", str(Path(teacher_maps).resolve()) if teacher_maps else "",
            float(distill))


# the calibration grid of validation (export calibrates on a wider one): small, so it costs seconds
# 0.2: a note branch distilled from the reference (--teacher-maps) learns its lower onset probabilities
VAL_ONSET_GRID = (0.2, 0.3, 0.4, 0.5, 0.6)
VAL_FRAME_GRID = (0.3, 0.4, 0.5, 0.6, 0.7)    # includes the defaults (0.5, 0.3)


@torch.no_grad()
def validate(model: torch.nn.Module, clips: list[dict], device: torch.device) -> dict[str, float]:
    """Note onset F1 (mir_eval, 50 ms) and frame F1 on whole validation clips at the default
    thresholds, and note F1 at the best thresholds of a small grid (``note_f1_calibrated``: what the
    shipped model is decoded with, so the best epoch is chosen by it)."""
    from .metrics import calibrate_thresholds, decode_to_intervals, note_scores

    model.eval()
    f1s, frame_tp, frame_fp, frame_fn = [], 0, 0, 0
    maps, refs = [], []
    for clip in clips:
        audio = torch.from_numpy(clip["audio"].astype(np.float32))[None].to(device)
        out = model(audio)
        onset = out["onset"][0].float().cpu().numpy()
        frame = out["frame"][0].float().cpu().numpy()
        rolls = piano_rolls(clip["notes"], frame.shape[1])
        pred = frame >= C.FRAME_THRESHOLD
        frame_tp += int((pred & (rolls["frame"] > 0)).sum())
        frame_fp += int((pred & (rolls["frame"] == 0)).sum())
        frame_fn += int((~pred & (rolls["frame"] > 0)).sum())
        ref = clip["notes"][:, [1, 2, 0]]
        est = decode_to_intervals(onset, frame, C.ONSET_THRESHOLD, C.FRAME_THRESHOLD, C.MIN_NOTE_FRAMES)   # melodia on
        f1s.append(note_scores(ref, est)["f1"])
        maps.append((onset, frame))
        refs.append(ref)
    frame_f1 = 2 * frame_tp / max(2 * frame_tp + frame_fp + frame_fn, 1)
    best = calibrate_thresholds(maps, refs, VAL_ONSET_GRID, VAL_FRAME_GRID)
    model.train()
    return {"note_f1": float(np.mean(f1s)), "frame_f1": float(frame_f1), "note_f1_calibrated": best["note_f1"],
            "onset_threshold": best["onset_threshold"], "frame_threshold": best["frame_threshold"],
            "melodia": best["melodia"]}


@torch.no_grad()
def validate_encoder(model: torch.nn.Module, clips: list[dict], device: torch.device) -> dict[str, float]:
    """Assignment accuracy of the timbre embedding on validation mixtures: reference notes pooled
    (frame-weighted, as the runtime does), clustered into the true number of parts, labels matched to
    parts by the best assignment; the mean share of notes in the right group."""
    from scipy.optimize import linear_sum_assignment

    from ..core.cluster import spectral_labels

    model.eval()
    accuracies = []
    for clip in clips:
        n_parts = len(clip["programs"])
        if n_parts < 2:
            continue
        out = model(torch.from_numpy(clip["audio"].astype(np.float32))[None].to(device))
        emb, frame = out["embedding"][0].float().cpu().numpy(), out["frame"][0].float().cpu().numpy()
        vectors, parts = [], []
        for pitch, start, end, part in clip["notes"]:
            row = int(pitch) - C.MIDI_MIN
            a = int(np.ceil(start * C.FRAMES_PER_SECOND))
            b = max(int(np.ceil(end * C.FRAMES_PER_SECOND)), a + 1)
            v = (emb[:, row, a:b] * frame[row, a:b]).sum(axis=1)
            if 0 <= row < C.N_PITCHES and np.linalg.norm(v) > 0:
                vectors.append(v / np.linalg.norm(v))
                parts.append(int(part))
        if len(vectors) < n_parts:
            continue
        labels = spectral_labels(np.array(vectors), n_parts)
        confusion = np.zeros((n_parts, n_parts))
        np.add.at(confusion, (np.array(parts), labels), 1)
        rows, cols = linear_sum_assignment(-confusion)
        accuracies.append(confusion[rows, cols].sum() / len(parts))
    model.train()
    return {"assignment_accuracy": float(np.mean(accuracies)) if accuracies else 0.0}


@dataclass
class Run:
    """What a training run carries from epoch to epoch (built by prepare_run)."""

    config: TrainConfig
    folder: Path
    model: torch.nn.Module
    net: torch.nn.Module                 # the model, wrapped in DistributedDataParallel on many processes
    optimiser: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    sampler: ClipSampler
    rng: np.random.Generator
    val_clips: list[dict]
    device: torch.device
    rank: int = 0
    world: int = 1
    teacher: torch.nn.Module | None = None
    start_epoch: int = 0
    best: float = float("-inf")


def check_config(config: TrainConfig) -> None:
    """DataError for a set-up that cannot train (before anything is read)."""
    if (config.teacher or config.teacher_maps) and config.model != "basicamt":
        raise DataError("--teacher and --teacher-maps distil a note branch: they train basicamt only")
    if config.teacher and config.teacher_maps:
        raise DataError("--teacher and --teacher-maps are two teachers: give one")
    if (config.teacher or config.teacher_maps) and not (math.isfinite(config.distill) and config.distill > 0):
        raise DataError(f"--distill must be a finite number > 0, got {config.distill}")


def start_processes(config: TrainConfig) -> tuple[int, int, torch.device]:
    """(world size, rank, device): joins the process group under torchrun; CPU threads as configured."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    if world > 1:
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = _device()
    if device.type == "cpu":
        # the processes of one machine share its cores: more threads than that oversubscribe them
        local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        torch.set_num_threads(max(1, min(config.threads, (os.cpu_count() or 1) // local)))
    return world, rank, device


def make_sampler(config: TrainConfig, data_dir: str | Path, rng: np.random.Generator) -> ClipSampler:
    """Training crops: Septimbre reads mixtures only (and may mix solo clips on the fly)."""
    septimbre = config.model == "septimbre"
    if not septimbre and (config.hard_mix or config.harmonic_labels or config.encoder_from):
        raise DataError("--hard-mix, --harmonic-labels and --encoder-from train septimbre's encoder only")
    return ClipSampler(data_dir, config.segment_seconds, rng, multi_part_only=septimbre,
                       dynamic_mix=config.dynamic_mix if septimbre else 0.0, augment_mode=config.augment,
                       hard_mix=config.hard_mix if septimbre else 0.0,
                       harmonic_labels=config.harmonic_labels if septimbre else 0.0,
                       teacher_maps=config.teacher_maps)


def _septimbre_from_notes(config: TrainConfig) -> torch.nn.Module:
    """Septimbre whose note branch is a trained BasicAMT's, frozen (its shape decides the config's)."""
    if not config.init_from:
        raise DataError("septimbre training needs --init-from a trained BasicAMT checkpoint")
    note_ckpt = load_basicamt_checkpoint(config.init_from)
    shape = note_shape(note_ckpt)
    for key, value in shape.items():
        setattr(config, key, value)
    model = build_model(config.model, **shape)
    load_note_weights(model, note_ckpt, config.init_from)
    if config.encoder_from:
        load_encoder_weights(model, config.encoder_from)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("timbre.")
    return model


def load_encoder_weights(model: torch.nn.Module, source: str) -> None:
    """Load a Septimbre checkpoint's timbre encoder (timbre.*) into ``model``; DataError otherwise."""
    ckpt = load_checkpoint(source)
    state = {k: v for k, v in ckpt["model"].items() if k.startswith("timbre.")}
    if ckpt["config"]["model"] != "septimbre" or not state:
        raise DataError(f"--encoder-from {source} is not a Septimbre checkpoint (no timbre encoder)")
    missing, unexpected = model.load_state_dict(state, strict=False)
    wrong = [k for k in missing if k.startswith("timbre.")]
    if unexpected or wrong:
        raise DataError(f"--encoder-from {source} does not fit this encoder: {(unexpected or wrong)[0]}")
    print(f"timbre encoder from {source}", flush=True)


def _basicamt_fine_tuned(config: TrainConfig) -> torch.nn.Module:
    """BasicAMT of the asked shape, its weights taken from ``init_from`` (printing what changed)."""
    model = build_model(config.model, **config.note_shape())
    src = load_basicamt_checkpoint(config.init_from)
    kept = load_note_weights(model, src, config.init_from)
    src_shape = note_shape(src)
    changes = [f"conv2 energy kept {kept:.3f}"]
    if src_shape["conv2_time_first"] != config.conv2_time_first:
        changes.append("conv2 re-factorised " + ("time first" if config.conv2_time_first else "frequency first"))
    asked = config.note_shape()
    for side, what in (("conv_kernel", "conv1"), ("neck_kernel", "neck")):
        k = asked[side]
        if src_shape[side] != k:
            changes.append(f"{what} cut to its central {k} x {k} taps")
    if src_shape["neck_bins"] != config.neck_bins:
        changes.append(f"neck and heads folded to {config.neck_bins} rows")
    print(f"initialised from {config.init_from} ({'; '.join(changes)})", flush=True)
    return model


def build_model_for(config: TrainConfig, resume: bool) -> torch.nn.Module:
    """The model a run trains: Septimbre on a frozen note branch, a fine-tuned BasicAMT (``init_from``,
    unless resuming: the run's own weights come next) or a fresh one."""
    if config.model == "septimbre":
        return _septimbre_from_notes(config)
    if config.init_from and not resume:
        return _basicamt_fine_tuned(config)
    return build_model(config.model, **config.note_shape())


def _patience(config: TrainConfig) -> int:
    # the encoder's score is its training loss over 50 random batches: noisy, so be slower to cut
    return 8 if config.model == "septimbre" else 3


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.ReduceLROnPlateau]:
    """AdamW over the trainable parameters and a plateau schedule on the validation score."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return optimiser, _plateau(config, optimiser)


def _plateau(config: TrainConfig, optimiser: torch.optim.Optimizer) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, mode="max", factor=0.3, patience=_patience(config))


def resume_run(run: Run) -> None:
    """Load ``last.pt`` of the run folder into the run (model, optimiser, schedule, counters, sampling
    state), refusing a checkpoint trained with another note shape or another distillation set-up."""
    config, last = run.config, run.folder / "last.pt"
    if not last.exists():
        raise DataError(f"--resume: no checkpoint in {run.folder}")
    ckpt = load_checkpoint(last)
    shape = note_shape(ckpt)
    if config.model == "basicamt" and shape != config.note_shape():
        raise DataError(f"--resume: the run in {run.folder} has {shape_flags(shape)}; resume it with the same")
    # a resumed run's loss must be the one it was trained with: the same teacher and weight (or none)
    was = (ckpt["config"].get("teacher", ""), ckpt["config"].get("teacher_maps", ""),
           float(ckpt["config"].get("distill", 1.0)))
    now = config.teacher, config.teacher_maps, config.distill
    if _teacher_key(*was) != _teacher_key(*now):
        before = (" ".join(f"--{flag} {value}" for flag, value in (("teacher", was[0]), ("teacher-maps", was[1]))
                           if value) + f" --distill {was[2]:g}") if was[0] or was[1] else "no --teacher"
        raise DataError(f"--resume: the run in {run.folder} was trained with {before}; resume it with the same")
    run.model.load_state_dict(ckpt["model"])
    run.optimiser.load_state_dict(ckpt["optimiser"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.start_epoch, run.best = ckpt["epoch"] + 1, ckpt["best"]
    if config.lr != ckpt["config"]["lr"]:   # a new --lr on resume restarts the schedule there
        for group in run.optimiser.param_groups:
            group["lr"] = config.lr
        run.scheduler = _plateau(config, run.optimiser)
    if run.world > 1:
        # the checkpoint holds rank 0's generator only: each rank continues from its own seed instead,
        # else every rank would draw the same batches after a resume
        run.rng = np.random.default_rng([config.seed, run.rank, run.start_epoch])
    else:
        run.rng.bit_generator.state = ckpt["rng"]
    run.sampler.rng = run.rng


def load_teacher(config: TrainConfig, device: torch.device) -> torch.nn.Module | None:
    """The frozen BasicAMT a note branch is distilled from (None without --teacher)."""
    if not config.teacher:
        return None
    teacher = model_from_checkpoint(config.teacher, basicamt_only=True).to(device)
    print(f"distilling from {config.teacher} ({count_parameters(teacher)} parameters, "
          f"weight {config.distill})", flush=True)
    teacher.requires_grad_(False)
    return teacher


def prepare_run(data_dir: str | Path, run_dir: str | Path, config: TrainConfig, val_dir: str | Path | None,
                resume: bool) -> Run:
    """Everything a run needs before its first step: processes, data, model, optimiser, resumed state,
    teacher; writes ``config.json``."""
    check_config(config)
    world, rank, device = start_processes(config)
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed + rank)
    rng = np.random.default_rng([config.seed, rank])
    sampler = make_sampler(config, data_dir, rng)
    val_clips = [load_clip(p) for p in list_clips(val_dir)[:config.val_clips]] if val_dir else []
    model = build_model_for(config, resume).to(device)
    optimiser, scheduler = make_optimizer(config, model)
    run = Run(config, folder, model, model, optimiser, scheduler, sampler, rng, val_clips, device, rank, world)
    if resume:
        resume_run(run)
    # loaded once the run's own checks have passed (a refused --resume does not read the teacher first)
    run.teacher = load_teacher(config, device)
    (folder / "config.json").write_text(json.dumps(asdict(config), indent=1))
    run.model = model.to(memory_format=torch.channels_last)
    if world > 1:
        run.net = torch.nn.parallel.DistributedDataParallel(
            run.model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        run.net = run.model
    return run


def _train_mode(run: Run) -> None:
    run.net.train()
    if run.config.model == "septimbre":   # the frozen note branch keeps its BatchNorm statistics
        run.model.front.eval()
        run.model.notes.eval()


def training_step(run: Run, batch: dict[str, torch.Tensor]) -> float:
    """One optimiser step on a batch; returns its loss."""
    config, model = run.config, run.model
    audio = batch["audio"].to(run.device)
    if config.model == "septimbre":
        # the encoder's loss needs only the embedding: skip the (frozen) note branch
        out = run.net(audio, logits=True, embedding_only=True)
        loss = info_nce(out["embedding"], batch["part"].to(run.device))
    else:
        out = run.net(audio, logits=True)
        loss = note_loss(out, batch["frame"].to(run.device), batch["onset"].to(run.device))
        if run.teacher is not None:
            with torch.no_grad():
                teacher_probs = {k: torch.sigmoid(v) for k, v in run.teacher.forward_logits(audio).items()}
            loss = loss + config.distill * distillation_loss(out, teacher_probs)
        elif "teacher_frame" in batch:
            teacher_probs = {k: batch[f"teacher_{k}"].to(run.device) for k in ("onset", "frame")}
            loss = loss + config.distill * distillation_loss(out, teacher_probs)
    run.optimiser.zero_grad(set_to_none=True)
    loss.backward()
    run.optimiser.step()
    model.front.clamp_affine()
    if config.model == "septimbre":
        with torch.no_grad():
            model.timbre.k.clamp_(*C.AFFINE_K_RANGE)
    return float(loss.detach())


def run_epoch(run: Run, epoch: int, progress: bool) -> dict:
    """Train one epoch; returns its log record (loss, lr, time)."""
    from tqdm import tqdm

    config = run.config
    t0 = time.time()
    _train_mode(run)
    losses: list[float] = []
    bar = tqdm(range(config.steps_per_epoch), disable=not progress or run.rank != 0,
               desc=f"epoch {epoch + 1}/{config.epochs}", unit="step", leave=False)
    for _ in bar:
        losses.append(training_step(run, run.sampler.batch(config.batch_size, config.noise_prob)))
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    return {"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": run.optimiser.param_groups[0]["lr"],
            "seconds": round(time.time() - t0, 1),
            "audio_seconds": config.steps_per_epoch * config.batch_size * config.segment_seconds}


def validate_epoch(run: Run, record: dict) -> float:
    """Validate (adding the figures to ``record``) and return the score that selects the best epoch:
    calibrated note F1 (BasicAMT), assignment accuracy (Septimbre), else minus the training loss."""
    if run.val_clips and run.config.model == "basicamt":
        record.update(validate(run.model, run.val_clips, run.device))
        return record["note_f1_calibrated"]
    if run.val_clips:
        record.update(validate_encoder(run.model, run.val_clips, run.device))
        return record["assignment_accuracy"]
    return -record["loss"]


def save_checkpoint(run: Run, epoch: int, record: dict, improved: bool) -> None:
    """``last.pt`` every epoch, ``best.pt`` when the score improved (both written atomically)."""
    state = {"model": run.model.state_dict(), "optimiser": run.optimiser.state_dict(),
             "scheduler": run.scheduler.state_dict(), "epoch": epoch, "best": run.best,
             "rng": run.rng.bit_generator.state, "config": asdict(run.config), "record": record,
             "parameters": count_parameters(run.model)}
    atomic_save(state, run.folder / "last.pt")
    if improved:
        atomic_save(state, run.folder / "best.pt")


def log_record(run: Run, record: dict) -> None:
    """Append the epoch's record to ``log.jsonl`` and print it on one line."""
    with open(run.folder / "log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()), flush=True)


def train(data_dir: str | Path, run_dir: str | Path, config: TrainConfig, val_dir: str | Path | None = None,
          resume: bool = False, progress: bool = True) -> dict:
    """Train (or resume) a model; returns the last epoch's log record."""
    run = prepare_run(data_dir, run_dir, config, val_dir, resume)
    record: dict = {}
    for epoch in range(run.start_epoch, config.epochs):
        record = run_epoch(run, epoch, progress)
        score = validate_epoch(run, record) if run.rank == 0 else 0.0     # rank 0 alone validates and writes
        if run.world > 1:
            # every rank steps its learning-rate schedule with rank 0's score: the ranks apply the same
            # averaged gradients, so they must keep the same learning rate or their weights drift apart
            shared = torch.tensor([score], dtype=torch.float64, device=run.device)
            torch.distributed.broadcast(shared, 0)
            score = float(shared.item())
        run.scheduler.step(score)
        if run.rank == 0:
            improved = score > run.best
            run.best = max(run.best, score)
            save_checkpoint(run, epoch, record, improved)
            log_record(run, record)
    if run.world > 1:
        torch.distributed.destroy_process_group()
    return record


@torch.no_grad()
def calibrate_run(run: str | Path, val_dir: str | Path | list[str | Path], max_clips: int = 36,
                  notes_from: str | Path | None = None) -> dict:
    """Grid-search the decoding (thresholds, melodia) of a run's best checkpoint (or of ``notes_from``,
    whose note branch a Septimbre export takes) on validation clips (one folder or several, up to
    ``max_clips`` from each); see calibrate_thresholds."""
    from .metrics import calibrate_thresholds

    model = model_from_checkpoint(notes_from or run)
    folders = val_dir if isinstance(val_dir, list) else [val_dir]
    paths = [p for folder in folders for p in list_clips(folder)[:max_clips]]
    maps, refs = [], []
    for p in paths:
        clip = load_clip(p)
        out = model(torch.from_numpy(clip["audio"].astype(np.float32))[None])
        maps.append((out["onset"][0].numpy(), out["frame"][0].numpy()))
        refs.append(clip["notes"][:, [1, 2, 0]])
    return calibrate_thresholds(maps, refs)
