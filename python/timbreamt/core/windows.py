"""Chunked inference: which input samples each model run reads and which of its frames are kept.

The model runs on windows of the 44.1 kHz audio: a core of CORE_FRAMES frames plus CONTEXT_FRAMES of
context on each side (cut at the file's ends, never zero-padded, so the first and last chunks see the
file's edges exactly as whole-file inference does). Core frames of the windows tile the file; since
every layer of our graphs is local, stitched maps equal whole-file maps. Numpy-free (runs in Pyodide).
"""
from __future__ import annotations

from dataclasses import dataclass

from .constants import CONTEXT_FRAMES, CORE_FRAMES, CROP_MARGIN_FRAMES, FRAME_GRID, GRAPH_HOP, HOP


@dataclass(frozen=True)
class Window:
    """One model run: input samples [in_start, in_end) give frames [frame_start, ...) of which
    [core_start, core_end) are kept."""

    in_start: int
    in_end: int
    core_start: int
    core_end: int

    @property
    def frame_start(self) -> int:
        return self.in_start // GRAPH_HOP


def n_frames(n_samples: int) -> int:
    """Frames the graph gives for ``n_samples`` input samples at 44.1 kHz."""
    if n_samples <= 0:
        return 0
    n22 = (n_samples + 1) // 2
    return (n22 - 1) // HOP + 1


def check_window_sizes(core_frames: int, context_frames: int) -> None:
    """Window sizes must keep every window start on the FRAME_GRID, else strided layers disagree."""
    if core_frames < 1 or context_frames < 0:
        raise ValueError("core_frames must be >= 1 and context_frames >= 0")
    if core_frames % FRAME_GRID or context_frames % FRAME_GRID:
        raise ValueError(f"core_frames and context_frames must be multiples of {FRAME_GRID}, "
                         f"got {core_frames} and {context_frames}")


def plan_windows(n_samples: int, core_frames: int = CORE_FRAMES, context_frames: int = CONTEXT_FRAMES) -> list[Window]:
    """Windows covering ``n_samples`` input samples (44.1 kHz). Starts are multiples of GRAPH_HOP."""
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    check_window_sizes(core_frames, context_frames)
    total = n_frames(n_samples)
    return [window_around(core_start, min(core_start + core_frames, total), context_frames, n_samples)
            for core_start in range(0, total, core_frames)]


def window_around(core_start: int, core_end: int, context_frames: int, n_samples: int) -> Window:
    """The window whose kept frames are [core_start, core_end): the input from ``context_frames`` before
    to ``context_frames`` after them, cut at the file's ends (``n_samples`` known so far). One rule for the
    planned windows (the page) and the streamed ones (the CLI), so both run the graph on the same input."""
    in_start = max(0, core_start - context_frames) * GRAPH_HOP
    in_end = min(n_samples, (core_end + context_frames) * GRAPH_HOP)
    return Window(in_start, in_end, core_start, core_end)


def window_crop(window: Window, window_frames: int, margin: int = CROP_MARGIN_FRAMES) -> tuple[int, int]:
    """Frames a graph with a ``crop`` input may drop at the start and end of ``window`` (whose input
    gives ``window_frames`` frames) before its convolutions: everything farther than ``margin`` from
    the core. The front end still sees the whole window (its energy statistic needs the context).
    The start stays on the FRAME_GRID. Returns (start, end) frame counts."""
    start = max(0, window.core_start - margin - window.frame_start)
    start -= start % FRAME_GRID
    end = max(0, window_frames - (window.core_end + margin - window.frame_start))
    return start, end
