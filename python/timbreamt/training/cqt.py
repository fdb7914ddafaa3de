"""Constant-Q transform in torch: top-octave kernels + FIR-decimated lower octaves.

Kernels exist for the top octave only; each lower octave is the signal low-passed and decimated by 2
(a zero-phase FIR: a 33-tap Hamming low-pass applied forward and backward, i.e. one conv1d with the
kernel convolved with its mirror, computed in polyphase form: HalfBandDecimator) and analysed with the
same kernels at half the hop.
Everything is conv1d with zero padding, so the transform is local: a chunk with enough context gives
the same frames as the whole file, provided chunks start at multiples of the hop.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..core import constants as C


def lowpass_kernel(taps: int = C.DOWNSAMPLE_TAPS, cutoff: float = C.DOWNSAMPLE_CUTOFF) -> np.ndarray:
    """Zero-phase low-pass kernel: a Hamming-windowed sinc convolved with itself, float64 (2*taps-1,)."""
    n = np.arange(taps) - (taps - 1) / 2
    h = cutoff * np.sinc(cutoff * n) * np.hamming(taps)
    h /= h.sum()
    return np.convolve(h, h[::-1])


class HalfBandDecimator(nn.Module):
    """(batch, 1, n) -> (batch, 1, ceil(n / 2)): the zero-phase low-pass then every second sample,
    i.e. ``conv1d(x, lowpass, stride=2, padding=len(lowpass) // 2)``, computed as one strided conv1d
    with ``phases`` output channels (channel p holds output samples j with j % phases == p), interleaved
    back afterwards. Why: a 1-channel conv1d makes onnxruntime build a taps x samples im2col matrix
    and run a 1-row GEMM; the polyphase form is an efficient many-row GEMM (measured on one 24 s
    window, 2 threads: 26.8 ms -> 2.4 ms for the 44.1 kHz halving). Same sums up to float rounding
    (~5e-7). Blocks of outputs start at output sample 0, so a chunk starting at a multiple of
    2 * phases input samples computes each output with the same kernel position, hence bit for bit as
    the whole signal does (``phases`` is chosen per octave for that, see CQT)."""

    def __init__(self, phases: int = 64, taps: np.ndarray | None = None) -> None:
        super().__init__()
        if phases < 1:
            raise ValueError(f"phases must be >= 1, got {phases}")
        h = torch.tensor(lowpass_kernel() if taps is None else taps, dtype=torch.float32)
        self.taps = len(h)
        self.pad = self.taps // 2
        self.phases = p = phases
        weight = torch.zeros(p, 1, 2 * (p - 1) + self.taps)
        for phase in range(p):
            weight[phase, 0, 2 * phase: 2 * phase + self.taps] = h
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = (x.shape[-1] + 1) // 2
        # Constant padding, enough for the last block whatever n is (a block or two too many are
        # computed and cut): a Pad with constant amounts is merged into the Conv by onnxruntime,
        # one that depends on n is a separate copy of the signal.
        right = self.weight.shape[-1] + 1 - self.pad
        x = nn.functional.pad(x, (self.pad, right))
        y = nn.functional.conv1d(x, self.weight, stride=2 * self.phases)   # (batch, phases, blocks)
        return y.transpose(1, 2).reshape(x.shape[0], 1, -1)[..., :outputs]


def top_octave_kernels(sample_rate: int = C.SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
    """Complex CQT kernels of the top octave.

    Returns (kernels, freqs): kernels complex128 (BINS_PER_OCTAVE, L) with L odd, each centred and
    L1-normalised by its window so a unit-amplitude sine at the bin frequency gives magnitude 0.5
    in every bin; freqs (BINS_PER_OCTAVE,) in Hz.
    """
    q = C.FILTER_SCALE / (2 ** (1 / C.BINS_PER_OCTAVE) - 1)
    top_fmin = C.FMIN * 2 ** (C.N_OCTAVES - 1)
    freqs = top_fmin * 2 ** (np.arange(C.BINS_PER_OCTAVE) / C.BINS_PER_OCTAVE)
    lengths = np.ceil(q * sample_rate / freqs).astype(int)
    max_len = int(lengths.max()) | 1  # odd, so a kernel has a centre sample
    kernels = np.zeros((C.BINS_PER_OCTAVE, max_len), dtype=np.complex128)
    for k, (f, length) in enumerate(zip(freqs, lengths)):
        window = np.hanning(length)
        t = (np.arange(length) - (length - 1) / 2) / sample_rate
        kernel = window * np.exp(2j * np.pi * f * t) / window.sum()
        start = (max_len - length) // 2
        kernels[k, start:start + length] = kernel
    return kernels, freqs


def cqt_frequencies() -> np.ndarray:
    """Centre frequencies of the 288 bins, low to high, Hz."""
    return C.FMIN * 2 ** (np.arange(C.N_BINS) / C.BINS_PER_OCTAVE)


class CQT(nn.Module):
    """(batch, samples) float32 at 22050 Hz -> (batch, 2, 288, frames): real and imaginary parts.

    frames = (samples - 1) // HOP + 1, frame i centred at sample i * HOP. Bins run low to high.
    The sample count is padded up to a multiple of HOP inside so all octaves give the same frames.
    """

    def __init__(self) -> None:
        super().__init__()
        kernels, _ = top_octave_kernels()
        weight = np.concatenate([kernels.real, kernels.imag])[:, None, :]
        self.register_buffer("kernels", torch.tensor(weight, dtype=torch.float32), persistent=False)
        self.kernel_pad = weight.shape[-1] // 2
        # Chunks start at multiples of WINDOW_GRID_SAMPLES; the decimator feeding octave k + 1 sees
        # them at multiples of WINDOW_GRID_SAMPLES / 2**k, so its phases divide half of that.
        self.decimators = nn.ModuleList(
            HalfBandDecimator(min(64, max(1, C.WINDOW_GRID_SAMPLES >> (k + 1)))) for k in range(C.N_OCTAVES - 1))

    def downsample(self, x: torch.Tensor, octave: int = 0) -> torch.Tensor:
        """(batch, 1, n) -> (batch, 1, ceil(n / 2)): zero-phase low-pass then keep even samples;
        ``octave``: how many times x was decimated already (it picks the polyphase layout)."""
        return self.decimators[octave](x)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = audio[:, None, :]
        n = x.shape[-1]
        # Pad to a whole number of hops: then every decimated octave yields the same frame count
        # ((n - 1) // HOP + 1 after dropping the last padded frame) without a dynamic crop.
        pad_end = (C.HOP - n % C.HOP) % C.HOP
        x = nn.functional.pad(x, (0, pad_end))
        octaves = []
        hop = C.HOP
        for octave in range(C.N_OCTAVES):
            if octave:
                x = self.downsample(x, octave - 1)
                hop //= 2
            y = nn.functional.conv1d(x, self.kernels, stride=hop, padding=self.kernel_pad)
            octaves.append(y)
        return _stack_low_to_high(octaves)


def _stack_low_to_high(octaves: list[torch.Tensor]) -> torch.Tensor:
    """octaves[0] is the top octave, each (batch, 72, frames) = 36 real then 36 imaginary rows."""
    bins = C.BINS_PER_OCTAVE
    reals = [y[:, :bins] for y in octaves[::-1]]
    imags = [y[:, bins:] for y in octaves[::-1]]
    return torch.stack([torch.cat(reals, dim=1), torch.cat(imags, dim=1)], dim=1)


def numpy_cqt_bin(audio: np.ndarray, freq: float, sample_rate: int = C.SAMPLE_RATE) -> complex:
    """Direct CQT coefficient of one bin at the centre of ``audio`` (reference for tests)."""
    q = C.FILTER_SCALE / (2 ** (1 / C.BINS_PER_OCTAVE) - 1)
    length = int(math.ceil(q * sample_rate / freq))
    window = np.hanning(length)
    t = (np.arange(length) - (length - 1) / 2) / sample_rate
    kernel = window * np.exp(2j * np.pi * freq * t) / window.sum()
    centre = len(audio) // 2
    start = centre - length // 2   # the same alignment as the centred kernels of CQT
    seg = audio[start: start + length]
    return complex(np.sum(seg * kernel))
