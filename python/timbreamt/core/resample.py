"""Sample-rate conversion in numpy: one streaming polyphase resampler for the CLI and the page.

The CLI (runtime/audio.py) and the browser (Pyodide, core/browser_job.py) both resample with this
module, so a file at any rate reaches the graph as the same float32 samples on both sides. That is
the point of writing it here rather than using soxr (CPython only) or the browser's resampler
(different filter per browser): the notes then agree note for note.

The filter is a Kaiser-windowed sinc (``ZERO_CROSSINGS`` zero crossings of the lower rate on each
side, beta ``KAISER_BETA``: stopband ~ -85 dB), cut off at ``ROLLOFF`` of the lower Nyquist
frequency, so the passband is flat to ~0.83 and images/aliases are attenuated from 1.0 of it.
Output sample j sits at input time j * in_rate / out_rate (sample 0 on sample 0); the signal is
taken as zero outside the input, and ``resample`` returns ceil(n * out_rate / in_rate) samples.

Exactness: every output sample is accumulated tap by tap in float32 with elementwise numpy
operations only (no BLAS, no pairwise sums), always in the same order. So the result does not
depend on how the input is cut into blocks (``StreamResampler`` equals ``resample`` bit for bit)
nor on the machine (IEEE float32 add/multiply are exactly rounded in CPython and in WebAssembly).
"""
from __future__ import annotations

from math import ceil, gcd

import numpy as np

ZERO_CROSSINGS = 32        # of the sinc at the lower rate, each side of the centre
KAISER_BETA = 8.6          # ~85 dB stopband
ROLLOFF = 0.91             # cutoff as a fraction of the lower Nyquist frequency
MAX_BLOCK_OUTPUTS = 1 << 18   # outputs computed per numpy pass (bounds the index array: 2 MB)
# Ratios with at most this many output phases per period (22.05 kHz: 2, 48 kHz: 147) run phase by phase
# on contiguous slices of the input split by ``down`` (no gather); more phases (16 kHz: 441) gather.
# Same float32 operations in the same order either way, so the outputs are identical. Measured, 20 s
# at each rate into 44.1 kHz (2 loaded cores): 22.05 kHz 0.86 -> 0.19 s per minute of audio, 48 kHz
# 0.52 -> 0.39, 96 kHz 0.86 -> 0.83; 16 kHz 0.43 gathering vs 0.50 phase by phase.
MAX_PHASES_BY_SLICES = 160


def _check_rate(name: str, rate) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or int(rate) <= 0:
        raise ValueError(f"{name} must be a positive integer number of Hz, got {rate!r}")
    return int(rate)


def design_filter(up: int, down: int, zero_crossings: int = ZERO_CROSSINGS, beta: float = KAISER_BETA,
                  rolloff: float = ROLLOFF) -> np.ndarray:
    """Polyphase coefficients (up, taps) float32 for the ratio up/down (coprime).

    Row p is the filter for an output that falls p/up of an input sample after its base input
    sample; tap k weighs input base - (taps/2 - 1) + k. Each row sums to 1 (exact DC gain)."""
    fc = 0.5 * min(1.0, up / down) * rolloff            # cutoff, cycles per input sample
    half = int(ceil(zero_crossings / (2.0 * fc)))       # input samples each side
    taps = 2 * half
    phase = np.arange(up, dtype=np.float64)[:, None] / up
    tau = phase + (half - 1) - np.arange(taps, dtype=np.float64)[None, :]   # output time - input time
    x = np.clip(tau / half, -1.0, 1.0)
    window = np.i0(beta * np.sqrt(1.0 - x * x)) / np.i0(beta)
    h = 2.0 * fc * np.sinc(2.0 * fc * tau) * window
    h /= h.sum(axis=1, keepdims=True)
    return h.astype(np.float32)


class StreamResampler:
    """Resample a mono float32 stream from ``in_rate`` to ``out_rate`` Hz, block by block.

    ``process(block)`` returns the output samples that the input so far determines; ``flush()``
    returns the rest (the input is taken as zero past its end) and ends the stream. The outputs of
    all calls concatenated equal ``resample(whole input)`` bit for bit, whatever the block sizes.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = _check_rate("in_rate", in_rate)
        self.out_rate = _check_rate("out_rate", out_rate)
        g = gcd(self.in_rate, self.out_rate)
        self.up, self.down = self.out_rate // g, self.in_rate // g
        self.n_in = 0
        self.n_out = 0
        self.finished = False
        if self.up == self.down:
            return
        self.table = design_filter(self.up, self.down)
        self.taps = self.table.shape[1]
        self.half = self.taps // 2
        r = np.arange(self.up, dtype=np.int64)
        self.delta = (r * self.down) // self.up          # base input of output r of a period, minus the period's
        self.columns = np.ascontiguousarray(self.table[(r * self.down) % self.up].T)   # (taps, up): tap k of each r
        # input samples kept, from global index buf_start on; zeros stand for the signal before 0
        self.buf = np.zeros(self.half - 1, np.float32)
        self.buf_start = -(self.half - 1)
        self.next_period = 0                             # outputs are computed in whole periods of ``up``

    def process(self, block: np.ndarray) -> np.ndarray:
        """block (n,) float32 (other float/int dtypes are converted) -> the new output samples."""
        if self.finished:
            raise ValueError("this StreamResampler was flushed; make a new one for another stream")
        x = np.asarray(block)
        if x.ndim != 1:
            raise ValueError(f"resample a mono signal of shape (samples,), got shape {x.shape}")
        x = x.astype(np.float32, copy=False)
        self.n_in += len(x)
        if self.up == self.down:
            self.n_out += len(x)
            return x.copy()
        self.buf = np.concatenate([self.buf, x]) if len(x) else self.buf
        # period P is complete once input P*down + delta[-1] + half exists
        last = (self.n_in - 1 - self.half - int(self.delta[-1])) // self.down
        return self._periods(last + 1 - self.next_period)

    def flush(self) -> np.ndarray:
        """The remaining output samples (input taken as zero past its end); ends the stream."""
        if self.finished:
            raise ValueError("this StreamResampler was already flushed")
        self.finished = True
        total = output_length(self.n_in, self.in_rate, self.out_rate)
        if self.up == self.down:
            return np.zeros(0, np.float32)
        periods = -(-total // self.up) - self.next_period
        if periods <= 0:
            return np.zeros(0, np.float32)
        end = (self.next_period + periods - 1) * self.down + int(self.delta[-1]) + self.half + 1
        pad = end - (self.buf_start + len(self.buf))
        if pad > 0:
            self.buf = np.concatenate([self.buf, np.zeros(pad, np.float32)])
        out = self._periods(periods)
        keep = total - (self.n_out - len(out))
        self.n_out = total
        return out[:keep]

    def _periods(self, count: int) -> np.ndarray:
        """Compute ``count`` whole periods (up outputs each) from the buffer, then drop used input."""
        if count <= 0:
            return np.zeros(0, np.float32)
        out = self._by_slices(count) if self.up <= MAX_PHASES_BY_SLICES else self._by_gather(count)
        self.next_period += count
        drop = self.next_period * self.down - (self.half - 1) - self.buf_start
        if drop > 0:
            self.buf = self.buf[drop:].copy()
            self.buf_start += drop
        self.n_out += len(out)
        return out

    def _by_slices(self, count: int) -> np.ndarray:
        """``count`` periods phase by phase: tap k of phase r reads every ``down``-th input sample from
        one offset, i.e. a contiguous slice of one of the ``down`` interleaved input streams."""
        up, down, taps = self.up, self.down, self.taps
        offsets = (self.next_period * down + self.delta[:, None] - (self.half - 1)
                   + np.arange(taps, dtype=np.int64)[None, :] - self.buf_start)        # (up, taps) buffer index
        streams = [np.ascontiguousarray(self.buf[b::down]) for b in range(down)] if down > 1 else [self.buf]
        stream_of, start_of = (offsets % down).tolist(), (offsets // down).tolist()
        out = np.empty((count, up), np.float32)
        tap = np.empty(count, np.float32)
        for r in range(up):
            acc, b, a, c = out[:, r], stream_of[r], start_of[r], self.columns[:, r]
            np.multiply(streams[b[0]][a[0]:a[0] + count], c[0], out=tap)
            acc[...] = tap
            for k in range(1, taps):                                  # fixed order: exact in any blocking
                np.multiply(streams[b[k]][a[k]:a[k] + count], c[k], out=tap)
                acc += tap
        return out.reshape(-1)

    def _by_gather(self, count: int) -> np.ndarray:
        """``count`` periods in blocks of whole periods, each tap gathered for all outputs at once."""
        pieces = []
        step = max(1, MAX_BLOCK_OUTPUTS // self.up)
        for first in range(0, count, step):
            q = min(step, count - first)
            period = self.next_period + first
            base = ((period + np.arange(q, dtype=np.int64))[:, None] * self.down + self.delta[None, :]
                    - (self.half - 1) - self.buf_start)                   # (q, up) buffer index of tap 0
            lo = int(base[0, 0])
            view = self.buf[lo:]
            base = (base - lo).astype(np.intp)     # take(out=) wants the platform's index type (int32 in wasm32)
            y = np.take(view, base) * self.columns[0]
            tap = np.empty_like(y)
            for k in range(1, self.taps):                                  # fixed order: exact in any blocking
                np.take(view[k:], base, out=tap)
                tap *= self.columns[k]
                y += tap
            pieces.append(y.reshape(-1))
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def output_length(n: int, in_rate: int, out_rate: int) -> int:
    """Samples ``resample`` returns for n input samples: ceil(n * out_rate / in_rate)."""
    return -(-int(n) * _check_rate("out_rate", out_rate) // _check_rate("in_rate", in_rate))


def resample(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """x (n,) float32 at ``in_rate`` -> (ceil(n * out_rate / in_rate),) float32 at ``out_rate``.

    Identical to feeding ``x`` through a ``StreamResampler`` in any blocks and flushing it."""
    s = StreamResampler(in_rate, out_rate)
    head = s.process(x)
    tail = s.flush()
    return head if not len(tail) else np.concatenate([head, tail])
