"""Audio augmentations that keep labels aligned: room reverb (pyroomacoustics), EQ, compression,
coloured noise and lossy-like band-limiting (numpy/scipy).

Every function takes float32 audio (samples,) at SAMPLE_RATE and an rng, and returns float32 audio of the
same length whose notes start and end where they did: filters run forward and backward (zero phase), the
compressor has no look-ahead delay, and the reverb's direct path is moved back to time zero. Why not
audiomentations: it pins soxr < 1.0 (a downgrade of the runtime's pin, ../shared/ENVIRONMENT.md).
"""
from __future__ import annotations

import numpy as np

from ..core import constants as C

SR = C.SAMPLE_RATE


def _check(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"audio must be 1-D (samples,), got shape {x.shape}")
    return x


def room_impulse_response(rng: np.random.Generator, rt60_range: tuple[float, float] = (0.2, 1.2)) -> np.ndarray:
    """A shoebox room's impulse response (pyroomacoustics image source method) from a random source to
    a random microphone at least 1 m apart, cut so that its direct path is sample 0. float64 (n,)."""
    import pyroomacoustics as pra

    dims = np.array([rng.uniform(3, 15), rng.uniform(3, 12), rng.uniform(2.4, 6)])
    rt60 = float(rng.uniform(*rt60_range))
    try:
        absorption, max_order = pra.inverse_sabine(rt60, dims)
    except ValueError:            # a time this room cannot have: the most reverberant it can
        absorption, max_order = 0.05, 30
    max_order = int(min(max_order, 12))      # higher orders add seconds of CPU for little change in the tail
    room = pra.ShoeBox(dims, fs=SR, materials=pra.Material(absorption), max_order=max_order,
                       use_rand_ism=False)
    while True:
        src = rng.uniform([0.5, 0.5, 1.0], dims - 0.5)
        mic = rng.uniform([0.5, 0.5, 1.0], dims - 0.5)
        if np.linalg.norm(src - mic) >= 1.0:
            break
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float64)
    # the direct path is the first arrival: the strongest peak within its travel time + 2 ms
    direct = np.linalg.norm(src - mic) / room.c * SR
    frac_delay = pra.constants.get("frac_delay_length") // 2      # pyroomacoustics' own offset
    around = int(direct) + frac_delay
    lo, hi = max(0, around - 8), min(len(rir), around + int(0.002 * SR))
    start = lo + int(np.argmax(np.abs(rir[lo:hi])))
    return rir[start:] / (np.abs(rir[start]) + 1e-12)


def room_reverb(audio: np.ndarray, rng: np.random.Generator, wet: tuple[float, float] = (0.3, 1.0)) -> np.ndarray:
    """Audio played in a random room (see room_impulse_response), the direct path kept at its time;
    ``wet``: share of the reverberant signal (a close or a distant microphone). Same length, peak kept."""
    from scipy.signal import fftconvolve

    x = _check(audio)
    rir = room_impulse_response(rng)
    reverb = fftconvolve(x, rir)[:len(x)]
    mix = rng.uniform(*wet)
    out = (1 - mix) * x + mix * reverb
    peak_in, peak_out = np.abs(x).max(), np.abs(out).max()
    if peak_out > 0:
        out *= peak_in / peak_out
    return out.astype(np.float32)


def equalise(audio: np.ndarray, rng: np.random.Generator, bands: int | None = None) -> np.ndarray:
    """1-3 random peaking bands (+-9 dB, 80 Hz - 8 kHz, Q 0.5-4) applied forward and backward."""
    from scipy.signal import sosfiltfilt

    x = _check(audio).astype(np.float64)
    for _ in range(bands if bands is not None else int(rng.integers(1, 4))):
        f = float(np.exp(rng.uniform(np.log(80), np.log(8000))))
        gain_db = float(rng.uniform(-9, 9)) / 2      # applied twice (forward and backward)
        q = float(rng.uniform(0.5, 4))
        x = sosfiltfilt(peaking_sos(f, gain_db, q), x)
    return x.astype(np.float32)


def peaking_sos(freq: float, gain_db: float, q: float) -> np.ndarray:
    """One second-order section of an RBJ peaking equaliser (audio EQ cookbook)."""
    a = 10 ** (gain_db / 40)
    w = 2 * np.pi * freq / SR
    alpha = np.sin(w) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w), 1 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])[None, :]


def compress(audio: np.ndarray, rng: np.random.Generator, ratio: float | None = None,
             threshold_db: float | None = None) -> np.ndarray:
    """Feed-forward compressor: level = RMS over ~10 ms, gain reduction above the threshold by
    ``ratio``, smoothed with a 5 ms attack and 80 ms release (no look-ahead: nothing moves in time);
    make-up gain restores the input's peak."""
    from scipy.signal import lfilter

    x = _check(audio).astype(np.float64)
    peak = np.abs(x).max()
    if peak == 0:
        return x.astype(np.float32)
    ratio = ratio if ratio is not None else float(rng.uniform(2, 8))
    threshold_db = threshold_db if threshold_db is not None else float(rng.uniform(-30, -10))
    alpha = np.exp(-1 / (0.01 * SR))
    power = lfilter([1 - alpha], [1, -alpha], x * x)
    level_db = 10 * np.log10(power / peak ** 2 + 1e-12)
    reduction_db = np.minimum(0.0, (threshold_db - level_db) * (1 - 1 / ratio))
    # attack (gain going down) fast, release (gain coming back) slow: a two-speed one-pole, per block
    block = 32
    r = reduction_db[::block]
    smoothed = np.empty_like(r)
    att, rel = np.exp(-block / (0.005 * SR)), np.exp(-block / (0.08 * SR))
    g = 0.0
    for i, target in enumerate(r):
        coeff = att if target < g else rel
        g = coeff * g + (1 - coeff) * target
        smoothed[i] = g
    gain = 10 ** (np.repeat(smoothed, block)[:len(x)] / 20)
    out = x * gain
    return (out * peak / (np.abs(out).max() + 1e-12)).astype(np.float32)


def add_noise(audio: np.ndarray, rng: np.random.Generator, snr_db: float | None = None,
              colour: str | None = None) -> np.ndarray:
    """White, pink or brown noise at ``snr_db`` (10-40 dB) below the audio's RMS."""
    x = _check(audio)
    colour = colour or str(rng.choice(["white", "pink", "brown"]))
    exponent = {"white": 0.0, "pink": 0.5, "brown": 1.0}[colour]
    spectrum = np.fft.rfft(rng.standard_normal(len(x)))
    f = np.fft.rfftfreq(len(x), 1 / SR)
    spectrum /= np.maximum(f, 20.0) ** exponent
    noise = np.fft.irfft(spectrum, len(x))
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    if rms == 0:
        return x.copy()
    snr = snr_db if snr_db is not None else float(rng.uniform(10, 40))
    noise *= rms / 10 ** (snr / 20) / (np.sqrt(np.mean(noise ** 2)) + 1e-12)
    return (x + noise).astype(np.float32)


def band_limit(audio: np.ndarray, rng: np.random.Generator, cutoff_hz: float | None = None,
               holes: bool | None = None) -> np.ndarray:
    """Lossy-codec-like damage: a steep zero-phase low-pass at 3-10 kHz and, half the time, the
    quietest short-time spectral bins zeroed (what a perceptual coder drops at low bit rates)."""
    from scipy.signal import butter, istft, sosfiltfilt, stft

    x = _check(audio).astype(np.float64)
    cutoff = cutoff_hz if cutoff_hz is not None else float(rng.uniform(3000, 10000))
    x = sosfiltfilt(butter(6, cutoff, fs=SR, output="sos"), x)
    if holes if holes is not None else rng.random() < 0.5:
        _, _, z = stft(x, fs=SR, nperseg=1024, noverlap=768)
        mag = np.abs(z)
        floor_db = float(rng.uniform(-45, -25))
        keep = mag >= mag.max(axis=0, keepdims=True) * 10 ** (floor_db / 20)
        _, y = istft(z * keep, fs=SR, nperseg=1024, noverlap=768)
        x = np.pad(y, (0, max(0, len(x) - len(y))))[:len(x)]
    return x.astype(np.float32)


AUGMENTATIONS = {"eq": equalise, "compress": compress, "noise": add_noise, "band_limit": band_limit}


def random_chain(audio: np.ndarray, rng: np.random.Generator, prob: float = 0.3) -> np.ndarray:
    """Each of EQ, compression, band-limiting and noise applied with probability ``prob`` (in that order)."""
    x = _check(audio)
    for name in ("eq", "compress", "band_limit", "noise"):
        if rng.random() < prob:
            x = AUGMENTATIONS[name](x, rng)
    return np.clip(x, -1, 1).astype(np.float32)
