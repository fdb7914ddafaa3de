"""Audio input: read any file libsndfile decodes, validate, mix down, resample (soxr), in blocks.

Long files are never held whole: ``AudioStream`` yields mono float32 blocks at the target rate, so an
hour of audio costs a few MB here. Every problem is an AudioError with a one-line message.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..core.errors import AudioError

SUPPORTED = "wav, flac, ogg/vorbis/opus, mp3, aiff and the other formats of libsndfile"
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768000
BLOCK_SECONDS = 10.0


def _open(path: str | Path):
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    if p.stat().st_size == 0:
        raise AudioError(f"{p}: empty file (0 bytes)")
    try:
        f = sf.SoundFile(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        msg = str(exc).split(":")[-1].strip() or "unknown format"
        raise AudioError(f"{p}: not a readable audio file ({msg}); supported: {SUPPORTED}") from exc
    if not MIN_SAMPLE_RATE <= f.samplerate <= MAX_SAMPLE_RATE:
        f.close()
        raise AudioError(f"{p}: implausible sample rate {f.samplerate} Hz")
    if f.channels < 1:
        f.close()
        raise AudioError(f"{p}: no audio channels")
    return f


class AudioStream:
    """Mono float32 blocks of a file at ``target_rate`` (streaming resampling, bounded memory).

    ``info()`` is read from the header; the true length is known only after reading (a truncated file
    or a lying header yields fewer samples than announced: ``samples_read`` counts them).
    """

    def __init__(self, path: str | Path, target_rate: int, block_seconds: float = BLOCK_SECONDS) -> None:
        self.path = Path(path)
        self.target_rate = int(target_rate)
        f = _open(path)
        self.sample_rate = f.samplerate
        self.channels = f.channels
        self.header_frames = f.frames
        f.close()
        self.block = max(1024, int(block_seconds * self.sample_rate))
        self.samples_read = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        import soundfile as sf
        import soxr

        resampler = None
        if self.sample_rate != self.target_rate:
            resampler = soxr.ResampleStream(self.sample_rate, self.target_rate, 1, dtype="float32", quality="HQ")
        f = _open(self.path)
        try:
            while True:
                try:
                    data = f.read(self.block, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as exc:
                    raise AudioError(f"{self.path}: decoding failed after {self.samples_read / self.sample_rate:.1f} s "
                                     f"({exc})") from exc
                last = len(data) < self.block
                if len(data):
                    mono = mixdown(data)
                    check_finite(mono, f"{self.path}", self.samples_read / self.sample_rate)
                    self.samples_read += len(mono)
                    out = resampler.resample_chunk(mono, last=last) if resampler else mono
                    if len(out):
                        yield out
                elif resampler is not None:
                    tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
                    if len(tail):
                        yield tail
                if last:
                    break
        finally:
            f.close()


def mixdown(data: np.ndarray) -> np.ndarray:
    """(samples, channels) -> (samples,) mean of the channels, float32."""
    if data.ndim == 1:
        return data.astype(np.float32, copy=False)
    if data.shape[1] == 1:
        return np.ascontiguousarray(data[:, 0], dtype=np.float32)
    return data.mean(axis=1, dtype=np.float32)


def check_finite(samples: np.ndarray, what: str, offset_seconds: float = 0.0, sample_rate: int | None = None) -> None:
    bad = ~np.isfinite(samples)
    if bad.any():
        first = int(np.argmax(bad))
        at = f" at {offset_seconds + first / sample_rate:.2f} s" if sample_rate else ""
        raise AudioError(f"{what}: audio contains NaN or infinite samples{at}")


def prepare_array(samples: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """Validate an in-memory signal (samples,) or (samples, channels) and return mono float32 at
    ``target_rate``."""
    import soxr

    a = np.asarray(samples)
    if a.dtype.kind not in "fiu":
        raise AudioError(f"audio array must be numeric, got dtype {a.dtype}")
    if a.ndim == 2 and a.shape[0] < a.shape[1] and a.shape[0] <= 16:
        raise AudioError(f"audio array of shape {a.shape} looks like (channels, samples): pass (samples, channels)")
    if a.ndim not in (1, 2):
        raise AudioError(f"audio array must be (samples,) or (samples, channels), got shape {a.shape}")
    if a.dtype.kind in "iu":
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    if not isinstance(sample_rate, (int, np.integer)) or not MIN_SAMPLE_RATE <= int(sample_rate) <= MAX_SAMPLE_RATE:
        raise AudioError(f"sample rate must be an integer between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz, "
                         f"got {sample_rate!r}")
    mono = mixdown(a.astype(np.float32, copy=False))
    check_finite(mono, "audio array", 0.0, int(sample_rate))
    if len(mono) == 0:
        raise AudioError("audio is empty (0 samples)")
    if int(sample_rate) != target_rate:
        mono = soxr.resample(mono, int(sample_rate), target_rate, quality="HQ").astype(np.float32)
    return mono
