"""Checkpoints: reading and writing them, the note branch's shape they record, and the weight surgery
that starts one note branch from another (re-factorised conv2, smaller kernels, one row per pitch)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..core import constants as C
from ..core.errors import DataError
from .models import LowRankConv, build_model


def atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint written by this module; DataError with a clear message otherwise."""
    p = Path(path)
    if p.is_dir():
        p = p / "best.pt" if (p / "best.pt").exists() else p / "last.pt"
    if not p.is_file():
        raise DataError(f"checkpoint not found: {p}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise DataError(f"corrupt checkpoint {p}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise DataError(f"{p} is not a timbreamt checkpoint (no model/config)")
    return ckpt


def load_basicamt_checkpoint(path: str | Path) -> dict:
    """load_checkpoint, and DataError unless it is a BasicAMT one (a note branch to start from)."""
    ckpt = load_checkpoint(path)
    if ckpt["config"]["model"] != "basicamt":
        raise DataError(f"{path} is not a BasicAMT checkpoint")
    return ckpt


def note_shape(ckpt: dict) -> dict:
    """The note branch's shape in a checkpoint, as build_model's keywords: conv2_rank (0 = full),
    conv_kernel, neck_bins, conv2_time_first and neck_kernel (checkpoints from before these options have
    the paper's full conv2, 5 x 5 kernels and a 252-bin neck; before neck_kernel, the neck's is conv1's)."""
    cfg = ckpt["config"]
    conv_kernel = int(cfg.get("conv_kernel", 5))
    return {"conv2_rank": int(cfg.get("conv2_rank", 0)), "conv_kernel": conv_kernel,
            "neck_bins": int(cfg.get("neck_bins", C.STACKED_BINS)),
            "conv2_time_first": bool(cfg.get("conv2_time_first", False)),
            "neck_kernel": int(cfg.get("neck_kernel") or conv_kernel)}


def shape_flags(shape: dict) -> str:
    """A note branch shape as the train command's flags (for error messages)."""
    return (f"--conv2-rank {shape['conv2_rank']} --conv-kernel {shape['conv_kernel']} --neck-kernel "
            f"{shape['neck_kernel']} --neck-bins {shape['neck_bins']}" + (" --conv2-time-first" if shape["conv2_time_first"] else ""))


# note branch weights whose kernels shrink when a 5 x 5 checkpoint starts a 3 x 3 branch, with the
# shape key and model attribute of their side
SQUARE_KERNELS = {"notes.conv1.0.weight": "conv_kernel", "notes.neck.0.weight": "neck_kernel"}
# the heads' kernels, which span bins in a 252-row neck and pitches in an 84-row one
HEAD_KERNELS = ("notes.frame_head.weight", "notes.onset_head.0.weight")


def fold_rows_to_pitches(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """A kernel over bins (out, in, R, W) -> one over pitches (out, in, rows, W): each bin's taps go to
    the pitch row nearest to them (bin offset d from the centre -> pitch offset round(d / 3)), which is
    exact for maps that do not change within a semitone: the start of a fine-tune, not a conversion."""
    src_rows = weight.shape[2]
    out = weight.new_zeros(weight.shape[0], weight.shape[1], rows, weight.shape[3])
    for r in range(src_rows):
        dst = rows // 2 + round((r - src_rows // 2) / C.BINS_PER_SEMITONE)
        out[:, :, min(max(dst, 0), rows - 1)] += weight[:, :, r]
    return out


def neck_to_phases(weight: torch.Tensor) -> torch.Tensor:
    """The paper's neck kernel over bins (16, 8, R, W), R <= 5 -> the pitch neck's (16, 24, 3, W) over
    the phase channels (phase p, channel c -> input channel 8p + c). Exact at each semitone's centre
    bin 3j + 1: its input bin 3j + 1 + d is phase (1 + d) mod 3 of pitch j + floor((1 + d) / 3)."""
    out_ch, in_ch, src_rows, width = weight.shape
    phases = C.BINS_PER_SEMITONE
    out = weight.new_zeros(out_ch, in_ch * phases, 3, width)
    for r in range(src_rows):
        shifted = phases // 2 + r - src_rows // 2            # input bin relative to the semitone's first bin
        phase, row = shifted % phases, 1 + shifted // phases
        if not 0 <= row < 3:
            raise ValueError(f"a {src_rows}-row neck kernel reaches beyond the neighbouring pitches")
        out[:, phase * in_ch:(phase + 1) * in_ch, row] += weight[:, :, r]
    return out


def load_note_weights(model: torch.nn.Module, ckpt: dict, source: str | Path) -> float:
    """Load a BasicAMT checkpoint's front end and note branch into ``model`` (a BasicAMT or Septimbre).
    A conv2 of another rank or order is re-factorised through the full kernel it equals (truncated
    SVD), 5 x 5 kernels load into 3 x 3 ones by their central taps, a 252-row neck into an 84-row one
    (conv2's 8 outputs for each of the three phases, the neck by neck_to_phases, the heads by
    fold_rows_to_pitches); returns the share of conv2's energy kept (1.0 when conv2 is unchanged)."""
    state = {k: v for k, v in ckpt["model"].items() if k.startswith(("front.", "notes."))}
    if not state or not any(k.startswith("notes.") for k in state):
        raise DataError(f"{source} has no note branch (not a BasicAMT checkpoint)")
    src = note_shape(ckpt)
    for key, side in SQUARE_KERNELS.items():
        src_kernel, dst_kernel = src[side], getattr(model.notes, side)
        if src_kernel == dst_kernel:
            continue
        if src_kernel < dst_kernel:
            raise DataError(f"{source}: {src_kernel} x {src_kernel} kernels cannot become {dst_kernel} x {dst_kernel}")
        cut = (src_kernel - dst_kernel) // 2
        # the 84-row neck's kernel has 3 rows at any side: only its time taps are cut
        rows = slice(None) if key == "notes.neck.0.weight" and src["neck_bins"] != C.STACKED_BINS \
            else slice(cut, cut + dst_kernel)
        state[key] = state[key][:, :, rows, cut:cut + dst_kernel].clone()
    src_rank, dst_rank = src["conv2_rank"], model.notes.conv2_rank
    src_bins, dst_bins = src["neck_bins"], model.notes.neck_bins
    kept = 1.0
    if (src_rank, src["conv2_time_first"]) != (dst_rank, model.notes.conv2_time_first):
        # through the full kernel the source's conv2 equals: re-factorised by truncated SVD
        if src_bins != C.STACKED_BINS:
            raise DataError(f"{source}: conv2's rank or order can change only from a {C.STACKED_BINS}-row neck")
        conv2 = {k.removeprefix("notes.conv2.0."): v for k, v in state.items() if k.startswith("notes.conv2.0.")}
        if src_rank:
            product = LowRankConv(src_rank, time_first=src["conv2_time_first"])
            product.load_state_dict(conv2)
            weight, bias = product.kernel()
        else:
            weight, bias = conv2["weight"], conv2["bias"]
        state = {k: v for k, v in state.items() if not k.startswith("notes.conv2.0.")}
        if dst_rank:
            product = LowRankConv(dst_rank, time_first=model.notes.conv2_time_first)
            kept = product.init_from_kernel(weight, bias)
            conv2 = product.state_dict()
        else:
            conv2 = {"weight": weight, "bias": bias}
        state.update({f"notes.conv2.0.{k}": v for k, v in conv2.items()})
    if src_bins != dst_bins:
        if src_bins < dst_bins:
            raise DataError(f"{source}: a {src_bins}-row neck cannot become a {dst_bins}-row one")
        # conv2's outputs (its last convolution and its BatchNorm) repeat for each phase: exact for the
        # centre bin's phase, a start for its neighbours (whose taps sit one bin off)
        last = "notes.conv2.0." if not dst_rank else (
            "notes.conv2.0.freq." if model.notes.conv2_time_first else "notes.conv2.0.time.")
        for key in [k for k in state if k.startswith((last, "notes.conv2.1.")) and state[k].dim() > 0]:
            state[key] = state[key].repeat(C.BINS_PER_SEMITONE, *[1] * (state[key].dim() - 1))
        state["notes.neck.0.weight"] = neck_to_phases(state["notes.neck.0.weight"])
        for key in HEAD_KERNELS:
            state[key] = fold_rows_to_pitches(state[key], 3)
    missing, unexpected = model.load_state_dict(state, strict=False)
    wrong = [k for k in missing if k.startswith(("front.", "notes."))]
    if unexpected or wrong:
        raise DataError(f"{source} does not fit this note branch: {(unexpected or wrong)[0]}")
    return kept


def model_from_checkpoint(path: str | Path, basicamt_only: bool = False) -> torch.nn.Module:
    """The model of a checkpoint, weights loaded, in eval mode; basicamt_only: DataError unless it is
    a BasicAMT checkpoint (see load_basicamt_checkpoint)."""
    ckpt = load_basicamt_checkpoint(path) if basicamt_only else load_checkpoint(path)
    model = build_model(ckpt["config"]["model"], **note_shape(ckpt))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise DataError(f"checkpoint {path} does not fit model {ckpt['config']['model']}: "
                        f"{str(exc).splitlines()[0]}") from exc
    model.eval()
    return model
