"""Audio input: read any file libsndfile decodes, validate, mix down, resample (core/resample.py, the
same resampler as the page), in blocks.

Long files are never held whole: ``AudioStream`` yields mono float32 blocks at the target rate, so an
hour of audio costs a few MB here. Nothing is sized from a header: a header's length is only compared
with what was read at the end (a shorter file gives a warning with the duration actually read, and
headers without a length - streaming FLAC and WAV encoders write them - are read to the end of the
data). Pipes and devices (FIFOs, /dev/stdin) are read as streams. Every problem is an AudioError with
a one-line message.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..core.resample import StreamResampler, resample
from ..core.errors import AudioError

SUPPORTED = "wav, flac, ogg/vorbis/opus, mp3, aiff and the other formats of libsndfile"
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768000
MAX_CHANNELS = 1024            # libsndfile's own limit; an array with more is a mistake
BLOCK_SECONDS = 10.0
# |sample| above this is no audio scaled to [-1, 1] (float files may exceed 1 a little); the shipped
# graphs stay finite up to 1e15 (measured), and overflow float32 energies beyond
MAX_SAMPLE_MAGNITUDE = 1e6
# samples (frames x channels) read at once, at most: a header's channel count cannot size a huge buffer
MAX_BLOCK_SAMPLES = 1 << 22
# libsndfile's "length unknown" (streamed FLAC/OGG without a sample count): at or above this, a
# header's length is no length at all
UNKNOWN_FRAMES = 1 << 62
# a file that ends this much before its header's length (and 1% of it) is reported as truncated; MP3
# headers give encoder estimates that may be off by a frame or two
TRUNCATION_TOLERANCE_SECONDS = 0.05
# the channels of a multi-channel file "cancel" when their mean is this far below them (power ratio,
# -40 dB) while they carry sound (mean square above -80 dBFS)
CANCEL_POWER_RATIO = 1e-4
CANCEL_MIN_POWER = 1e-8
# bytes after a zero-length WAV data chunk that are read as audio at most when checking whether only
# other chunks follow it (more than this is certainly audio)
WAV_TRAILER_CHECK_BYTES = 1 << 20


class _PatchedFile:
    """A read-only file whose bytes at given offsets are replaced: a WAV header's zero data size is
    given the file's true size, so libsndfile reads what a streaming writer left there (soundfile's
    virtual I/O calls read/seek/tell)."""

    def __init__(self, path: Path, patches: dict[int, bytes]) -> None:
        self._f = open(path, "rb")
        self._patches = patches
        self.name = os.fsdecode(path)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def read(self, n: int = -1) -> bytes:
        pos = self._f.tell()
        data = self._f.read(n)
        for at, new in self._patches.items():
            lo, hi = max(at, pos), min(at + len(new), pos + len(data))
            if lo < hi:
                data = data[:lo - pos] + new[lo - at:hi - at] + data[hi - pos:]
        return data

    def close(self) -> None:
        self._f.close()


def _riff_chunks(data: bytes, pos: int):
    """(id, size, offset of the chunk's header) of the RIFF chunks in ``data`` from ``pos``."""
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        yield data[pos:pos + 4], size, pos
        pos += 8 + size + (size & 1)


def _only_chunks(data: bytes) -> bool:
    """Whether ``data`` is a sequence of well-formed RIFF chunks that ends exactly at its end."""
    pos = 0
    for cid, size, pos in _riff_chunks(data, 0):
        if not all(32 <= c < 127 for c in cid):
            return False
        pos += 8 + size + (size & 1)
    return pos in (len(data), len(data) + 1)


def _wav_layout(path: Path, file_size: int) -> tuple[int | None, dict[int, bytes]]:
    """For a RIFF WAVE file: (frames its data chunk declares, or None; byte patches making a streaming
    writer's zero data size the true one). libsndfile itself clamps a declared length to the file, so
    truncation is found from here."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None, {}
    block_align = 0
    for cid, size, pos in _riff_chunks(head, 12):
        if cid == b"fmt " and pos + 22 <= len(head):
            block_align = int.from_bytes(head[pos + 20:pos + 22], "little")
        elif cid == b"data":
            start = pos + 8
            rest = file_size - start
            if size == 0 and rest > 0:
                with open(path, "rb") as f:
                    f.seek(start)
                    trailer = f.read(WAV_TRAILER_CHECK_BYTES + 1)
                if len(trailer) > WAV_TRAILER_CHECK_BYTES or not _only_chunks(trailer):
                    # a streaming writer never came back to write the size: the rest of the file is audio
                    patches = {pos + 4: min(rest, 0xFFFFFFFF).to_bytes(4, "little")}
                    if int.from_bytes(head[4:8], "little") < file_size - 8:
                        patches[4] = min(file_size - 8, 0xFFFFFFFF).to_bytes(4, "little")
                    return None, patches
            if size in (0, 0xFFFFFFFF) or not block_align:    # 0xFFFFFFFF: "to the end" by convention
                return None, {}
            return size // block_align, {}
    return None, {}


def _describe(mode: int) -> str:
    return "a pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"


def _open(path: str | Path):
    """Open ``path`` with libsndfile: (SoundFile, file object to close or None, frames declared by a
    WAV data chunk or None). Raises AudioError with a one-line message."""
    import soundfile as sf

    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise AudioError(f"{p}: no such file") from None
    except OSError as exc:
        raise AudioError(f"{p}: cannot open ({exc.strerror or exc})") from None
    regular = stat.S_ISREG(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(f"{p}: is a directory, not an audio file")
    declared, handle, source = None, None, os.fsencode(p)   # bytes: names that are not UTF-8 work too
    if regular:
        if st.st_size == 0:
            try:   # /proc and /sys files say 0 bytes but have content
                with open(p, "rb") as f:
                    empty = not f.read(1)
            except OSError as exc:
                raise AudioError(f"{p}: cannot open ({exc.strerror or exc})") from None
            if empty:
                raise AudioError(f"{p}: empty file (0 bytes)")
        else:
            try:
                declared, patches = _wav_layout(p, st.st_size)
            except OSError as exc:
                raise AudioError(f"{p}: cannot open ({exc.strerror or exc})") from None
            if patches:
                handle = source = _PatchedFile(p, patches)
    elif stat.S_ISCHR(st.st_mode):   # a terminal would wait for audio typed in; pipes are not opened twice
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
            try:
                tty = os.isatty(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise AudioError(f"{p}: cannot open {_describe(st.st_mode)} ({exc.strerror or exc})") from None
        if tty:
            raise AudioError(f"{p}: is a terminal; pipe audio into it or give a file")
    try:
        f = sf.SoundFile(source)
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError) as exc:
        if handle is not None:
            handle.close()
        msg = str(exc).split(":")[-1].strip() or "unknown format"
        if not regular:
            raise AudioError(f"{p}: cannot decode audio streamed from {_describe(st.st_mode)} ({msg}); "
                             "wav, ogg and mp3 stream, other formats need a file: save it first") from exc
        raise AudioError(f"{p}: not a readable audio file ({msg}); supported: {SUPPORTED}") from exc
    problem = None
    if not MIN_SAMPLE_RATE <= f.samplerate <= MAX_SAMPLE_RATE:
        problem = f"implausible sample rate {f.samplerate} Hz"
    elif f.channels < 1:
        problem = "no audio channels"
    if problem:
        f.close()
        if handle is not None:
            handle.close()
        raise AudioError(f"{p}: {problem}")
    return f, handle, declared


class AudioStream:
    """Mono float32 blocks of a file at ``target_rate`` (streaming resampling, bounded memory).

    The file is opened once (so pipes work) and read once: iterate it a single time. ``header_frames``
    is what the header announces (None when it gives no length); the true length is known only after
    reading (``samples_read``). After the iteration, ``warnings`` lists what the caller should tell the
    user: a file shorter than its header (truncated), a decoding error that ended the read early,
    channels that cancel in the mono mix.
    """

    def __init__(self, path: str | Path, target_rate: int, block_seconds: float = BLOCK_SECONDS) -> None:
        self._file = self._handle = None
        self.path = Path(path)
        self.target_rate = int(target_rate)
        self._file, self._handle, declared = _open(path)
        self.sample_rate = self._file.samplerate
        self.channels = self._file.channels
        frames = declared if declared is not None else self._file.frames
        self.header_frames: int | None = frames if 0 < frames < UNKNOWN_FRAMES else None
        self.block = max(1, min(max(1024, int(block_seconds * self.sample_rate)), MAX_BLOCK_SAMPLES // self.channels))
        self.samples_read = 0
        self.warnings: list[str] = []
        self._used = False

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __del__(self) -> None:
        self.close()

    def _read_block(self) -> tuple[np.ndarray, str | None]:
        """Up to ``block`` frames (frames, channels) and the decoder's error, if any. libsndfile's
        reader is called directly: soundfile's ``read`` seeks after each read and trusts the header's
        length, which fails at the end of a stream whose header gave none (streamed FLAC)."""
        import soundfile as sf

        buf = np.empty((self.block, self.channels), dtype=np.float32)
        n = sf._snd.sf_readf_float(self._file._file, sf._ffi.cast("float *", buf.ctypes.data), self.block)
        err = sf._snd.sf_error(self._file._file)
        message = sf._ffi.string(sf._snd.sf_strerror(self._file._file)).decode("utf-8", "replace") if err else None
        return buf[:max(0, int(n))], message

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._used or self._file is None:
            raise RuntimeError("an AudioStream is read once")
        self._used = True
        resampler = None
        if self.sample_rate != self.target_rate:
            resampler = StreamResampler(self.sample_rate, self.target_rate)
        channel_power = mono_power = 0.0
        try:
            while True:
                data, error = self._read_block()
                last = len(data) < self.block or error is not None
                if len(data):
                    mono = mixdown(data)
                    check_finite(mono, f"{self.path}", self.samples_read / self.sample_rate, self.sample_rate)
                    if self.channels > 1:
                        channel_power += float(np.einsum("ij,ij->", data, data, dtype=np.float64)) / self.channels
                        mono_power += float(np.dot(mono.astype(np.float64), mono))
                    self.samples_read += len(mono)
                    out = resampler.process(mono) if resampler else mono
                    if len(out):
                        yield out
                if last and resampler is not None:
                    tail = resampler.flush()
                    if len(tail):
                        yield tail
                if error is not None:
                    if self.samples_read == 0:
                        raise AudioError(f"{self.path}: decoding failed ({error})")
                    self.warnings.append(f"decoding stopped after {self.samples_read / self.sample_rate:.2f} s "
                                         f"({error}): only that part is transcribed")
                if last:
                    break
        finally:
            self.close()
        if not self.warnings:    # a decoding error already says where the audio ended
            self._check_length()
        cancel = cancellation_warning(channel_power, mono_power, self.samples_read,
                                      "e.g. the left: sox IN OUT remix 1")
        if cancel:
            self.warnings.append(cancel)

    def _check_length(self) -> None:
        announced, read = self.header_frames, self.samples_read
        if announced is None or read >= announced or read == 0:
            return
        missing = announced - read
        if missing > max(TRUNCATION_TOLERANCE_SECONDS * self.sample_rate, 0.01 * announced):
            self.warnings.append(f"the file ends after {read / self.sample_rate:.2f} s but its header announces "
                                 f"{announced / self.sample_rate:.2f} s (truncated?): transcribed what is there")


def cancellation_warning(channel_power: float, mono_power: float, n_samples: int,
                         how: str = "e.g. the left: array[:, 0]") -> str | None:
    """A warning when the mono mix (mean of the channels) is silent while the channels are not:
    channels in opposite phase cancel, and the transcription would silently find nothing.
    channel_power: sum over samples of the channels' mean square; mono_power: sum of the mix's squares."""
    if n_samples == 0 or channel_power / n_samples <= CANCEL_MIN_POWER:
        return None
    if mono_power > CANCEL_POWER_RATIO * channel_power:
        return None
    ratio = max(-120.0, 10 * np.log10(max(mono_power, 1e-30) / channel_power))
    return (f"the channels cancel in the mono mix ({ratio:.0f} dB below them: opposite phase?), so almost "
            f"nothing is heard; transcribe one channel instead ({how})")


def mixdown(data: np.ndarray) -> np.ndarray:
    """(samples, channels) -> (samples,) mean of the channels, float32."""
    if data.ndim == 1:
        return data.astype(np.float32, copy=False)
    if data.shape[1] == 1:
        return np.ascontiguousarray(data[:, 0], dtype=np.float32)
    return data.mean(axis=1, dtype=np.float32)


def check_finite(samples: np.ndarray, what: str, offset_seconds: float = 0.0, sample_rate: int | None = None) -> None:
    """AudioError when samples are NaN or infinite, or so large (beyond MAX_SAMPLE_MAGNITUDE) that they
    cannot be audio scaled to [-1, 1] (the graphs' energies would overflow float32 near 1e19)."""
    bad = ~np.isfinite(samples)
    kind = "NaN or infinite samples"
    if not bad.any():
        bad = np.abs(samples) > MAX_SAMPLE_MAGNITUDE
        kind = f"samples beyond +-{MAX_SAMPLE_MAGNITUDE:g} (audio is expected in [-1, 1])"
    if bad.any():
        first = int(np.argmax(bad))
        at = f" at {offset_seconds + first / sample_rate:.2f} s" if sample_rate else ""
        raise AudioError(f"{what}: audio contains {kind}{at}")


def prepare_array(samples: np.ndarray, sample_rate: int, target_rate: int, warnings: list[str] | None = None) -> np.ndarray:
    """Validate an in-memory signal (samples,) or (samples, channels) and return mono float32 at
    ``target_rate``. Integer samples are scaled by their type's maximum. A 2-D array whose first axis is
    the shorter is refused (it is (channels, samples): pass its transpose), as is one with more than
    MAX_CHANNELS channels. ``warnings`` receives a warning when the channels cancel in the mono mix."""
    a = np.asarray(samples)
    if a.dtype.kind not in "fiu":
        raise AudioError(f"audio array must be numeric (float or int), got dtype {a.dtype}")
    if a.ndim not in (1, 2):
        raise AudioError(f"audio array must be (samples,) or (samples, channels), got shape {a.shape}")
    if a.ndim == 2 and a.shape[0] < a.shape[1]:
        raise AudioError(f"audio array of shape {a.shape} looks like (channels, samples): pass (samples, channels), "
                         "e.g. array.T")
    if a.ndim == 2 and a.shape[1] > MAX_CHANNELS:
        raise AudioError(f"audio array has {a.shape[1]} channels (at most {MAX_CHANNELS}): shape {a.shape}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) \
            or not MIN_SAMPLE_RATE <= int(sample_rate) <= MAX_SAMPLE_RATE:
        raise AudioError(f"sample rate must be an integer between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz, "
                         f"got {sample_rate!r}")
    if a.size == 0:
        raise AudioError("audio is empty (0 samples)")
    if a.dtype.kind in "iu":
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    data = a.astype(np.float32, copy=False)
    mono = mixdown(data)
    check_finite(mono, "audio array", 0.0, int(sample_rate))
    if data.ndim == 2 and data.shape[1] > 1 and warnings is not None:
        cancel = cancellation_warning(float(np.einsum("ij,ij->", data, data, dtype=np.float64)) / data.shape[1],
                                      float(np.dot(mono.astype(np.float64), mono)), len(mono))
        if cancel:
            warnings.append(cancel)
    if int(sample_rate) != target_rate:
        mono = resample(mono, int(sample_rate), target_rate)
    return mono
