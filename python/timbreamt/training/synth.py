"""Procedural instruments: an unbounded source of new timbres for training data.

Soundfonts repeat a few recorded instruments (../shared/ENVIRONMENT.md measured MuseScore General as
nearly FluidR3 on 31 of 43 programs), so a model trained on them learns those instruments. Here every
call of ``draw_instrument`` makes a new one from random parameters:

- ``additive``: harmonic partials under a random spectral envelope fixed in Hz (formants and a tilt),
  so the timbre changes across the register as a real instrument's does; sustained or decaying,
  slightly stiff (inharmonic) partials, velocity-dependent brightness.
- ``fm``: two-operator FM with integer frequency ratios (the fundamental stays the labelled pitch) and a
  decaying modulation index.
- ``pluck``: Karplus-Strong string whose loop delay is tuned to the exact period (the fractional part
  through a two-tap interpolation solved for its phase delay at the fundamental).
- ``bowed``: sawtooth-like partials through body formants, bow noise, slow attacks, delayed vibrato.
- ``blown``: reed (odd partials strong) or flute/brass-like spectra with breath noise, soft attacks,
  tremolo.

``perform`` turns a score part into a performance (timing jitter, legato overlaps, sustain pedal) and
returns the performed notes: the labels are what is played, so they stay aligned with the audio.
Each note then draws its own vibrato, tremolo, attack time and crescendo when rendered.

Label convention (checked in tests/test_synth.py): a note's onset is when its excitation starts. Attacks
are linear in amplitude, at most MAX_ATTACK_S long, so a note is within 20 dB of its peak after at most
0.1 x MAX_ATTACK_S = 25 ms: inside the 50 ms onset tolerance of mir_eval. Its offset is the note-off
(or the pedal's release); the release tail after it is at least 20 dB down within RELEASE_S[1] x 2.3.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core import constants as C

FAMILIES = ("additive", "fm", "pluck", "bowed", "blown")
SR = C.SAMPLE_RATE
MAX_PARTIAL_HZ = 0.45 * SR        # no partial above this (no aliasing, vibrato included)
MAX_PARTIALS = 48
MAX_ATTACK_S = 0.25               # slowest attack: reaches -20 dB of its peak after 25 ms (linear ramp)
RELEASE_S = (0.02, 0.12)          # exponential release time constants after note-off
# register (lowest, highest centre MIDI pitch) and half-width (semitones) of each family's instruments
REGISTERS = {"additive": ((36, 90), (10, 24)), "fm": ((36, 92), (10, 20)), "pluck": ((38, 80), (12, 20)),
             "bowed": ((36, 88), (10, 18)), "blown": ((50, 90), (9, 15))}


@dataclass
class Instrument:
    """One procedural instrument: a family and the parameters drawn for it."""

    family: str
    register: tuple[int, int]            # lowest, highest MIDI pitch it plays
    sustained: bool                      # held notes keep their level (else they decay)
    env_log2_hz: np.ndarray              # spectral envelope: points (log2 Hz) ...
    env_db: np.ndarray                   # ... and levels there, dB
    params: dict = field(default_factory=dict)

    def partial_gain(self, hz: np.ndarray) -> np.ndarray:
        """Linear gain of the spectral envelope at frequencies ``hz``."""
        return 10 ** (np.interp(np.log2(np.maximum(hz, 1.0)), self.env_log2_hz, self.env_db) / 20)


def midi_hz(pitch: float) -> float:
    return 440.0 * 2 ** ((pitch - 69) / 12)


def _spectral_envelope(rng: np.random.Generator, formants: int, tilt_db_per_octave: float) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random envelope over 40 Hz - 11 kHz: a tilt plus Gaussian formant bumps, in dB."""
    x = np.linspace(np.log2(40.0), np.log2(SR / 2), 48)
    db = tilt_db_per_octave * np.maximum(x - np.log2(150.0), 0)
    for _ in range(formants):
        centre = rng.uniform(np.log2(250.0), np.log2(5000.0))
        width = rng.uniform(0.15, 0.7)
        db = db + rng.uniform(3, 18) * np.exp(-0.5 * ((x - centre) / width) ** 2)
    db = db + np.convolve(rng.normal(0, 2.0, len(x)), np.ones(5) / 5, mode="same")   # small ripples
    return x, db - db.max()


def draw_instrument(family: str, rng: np.random.Generator) -> Instrument:
    """A new instrument of ``family`` (see FAMILIES) with random timbre, register and playing style."""
    if family not in FAMILIES:
        raise ValueError(f"unknown synthesis family {family!r}; expected one of {FAMILIES}")
    (lo_c, hi_c), (lo_w, hi_w) = REGISTERS[family]
    centre, half = int(rng.integers(lo_c, hi_c + 1)), int(rng.integers(lo_w, hi_w + 1))
    register = (max(C.MIDI_MIN, centre - half), min(C.MIDI_MAX, centre + half))
    p: dict = {"vibrato_prob": 0.2, "tremolo_prob": 0.1, "attack": (0.003, 0.03), "noise_db": -80.0,
               "release": float(rng.uniform(*RELEASE_S)), "stiffness": 0.0, "even_db": 0.0,
               "decay_s": float(rng.uniform(0.4, 3.0)), "partial_damping": float(rng.uniform(0.0, 0.25)),
               "pedal_prob": 0.0, "legato_prob": 0.0}
    if family == "additive":
        sustained = bool(rng.random() < 0.5)
        x, db = _spectral_envelope(rng, int(rng.integers(0, 4)), rng.uniform(-14, -2))
        p.update(stiffness=float(rng.choice([0.0, rng.uniform(0, 4e-4)])), even_db=float(rng.uniform(-15, 0)),
                 attack=(0.002, 0.02) if not sustained else (0.005, MAX_ATTACK_S),
                 vibrato_prob=0.4 if sustained else 0.0, pedal_prob=0.0 if sustained else 0.5,
                 legato_prob=0.4 if sustained else 0.0, noise_db=float(rng.uniform(-70, -35)))
    elif family == "fm":
        sustained = bool(rng.random() < 0.5)
        x, db = _spectral_envelope(rng, int(rng.integers(0, 2)), rng.uniform(-6, 0))
        p.update(ratio=int(rng.integers(1, 8)), index=float(rng.uniform(0.3, 4.0)),
                 index_decay_s=float(rng.uniform(0.1, 2.0)), attack=(0.002, 0.03) if not sustained else (0.005, 0.15),
                 vibrato_prob=0.3 if sustained else 0.0, pedal_prob=0.0 if sustained else 0.4,
                 legato_prob=0.3 if sustained else 0.0)
    elif family == "pluck":
        sustained = False
        x, db = _spectral_envelope(rng, int(rng.integers(0, 3)), rng.uniform(-6, 0))
        p.update(brightness=float(rng.uniform(0.2, 0.95)), pluck_position=float(rng.uniform(0.05, 0.45)),
                 decay_s=float(rng.uniform(0.8, 5.0)), pedal_prob=0.5, attack=(0.0, 0.0))
    elif family == "bowed":
        sustained = True
        x, db = _spectral_envelope(rng, int(rng.integers(2, 6)), rng.uniform(-8, -2))
        p.update(slope=float(rng.uniform(0.7, 1.4)), attack=(0.03, MAX_ATTACK_S), vibrato_prob=0.85,
                 tremolo_prob=0.1, noise_db=float(rng.uniform(-45, -20)), legato_prob=0.6,
                 even_db=float(rng.uniform(-4, 0)))
    else:   # blown
        sustained = True
        reed = bool(rng.random() < 0.5)
        x, db = _spectral_envelope(rng, int(rng.integers(1, 4)), rng.uniform(-16, -4))
        p.update(slope=float(rng.uniform(0.8, 2.0)), even_db=float(rng.uniform(-25, -10) if reed else rng.uniform(-5, 0)),
                 attack=(0.02, MAX_ATTACK_S), vibrato_prob=0.5, tremolo_prob=0.3,
                 noise_db=float(rng.uniform(-40, -18)), legato_prob=0.6)
    return Instrument(family, register, sustained, x, db, p)


# ------------------------------------------------------------------------------------------------
# performance: what is played (and labelled)
def fit_register(notes: np.ndarray, register: tuple[int, int]) -> np.ndarray:
    """Notes (n, 3) rows (pitch, start_s, end_s) moved into ``register`` (lowest, highest MIDI): the
    part is transposed by whole octaves towards the register's centre, then notes still outside it are
    folded in by octaves (an instrument plays where it can; a register narrower than an octave clips)."""
    out = np.array(notes, dtype=np.float32).reshape(-1, 3).copy()
    if not len(out):
        return out
    lo, hi = register
    shift = 12 * np.round(((lo + hi) / 2 - np.median(out[:, 0])) / 12)
    out[:, 0] += shift
    for _ in range(8):          # registers span >= 12 semitones: folding settles in a few rounds
        out[out[:, 0] < lo, 0] += 12
        out[out[:, 0] > hi, 0] -= 12
    out[:, 0] = np.clip(out[:, 0], lo, hi)
    return out


def perform(notes: np.ndarray, velocities: np.ndarray, instrument: Instrument, seconds: float,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A performance of notes (n, 3) (pitch, start_s, end_s) by ``instrument``: register, timing jitter,
    legato overlaps, sustain pedal. Returns the played notes (the labels) and their velocities, sorted by
    start; notes of one pitch never overlap (the earlier ends where the next starts)."""
    n = fit_register(notes, instrument.register)
    v = np.asarray(velocities).copy()
    if not len(n):
        return n, v
    jitter = rng.uniform(0, 0.015)                      # timing spread, s (a human player's)
    shift = rng.normal(0, jitter, len(n)).astype(np.float32)
    n[:, 1] = np.clip(n[:, 1] + shift, 0, seconds - 0.03)
    n[:, 2] = np.clip(n[:, 2] + shift, n[:, 1] + 0.03, seconds)
    order = np.argsort(n[:, 1], kind="stable")
    n, v = n[order], v[order]
    if rng.random() < instrument.params["legato_prob"]:   # each note held into the next onset
        starts = np.unique(n[:, 1])
        nxt = np.searchsorted(starts, n[:, 1], side="right")
        has_next = nxt < len(starts)
        next_start = np.where(has_next, starts[np.minimum(nxt, len(starts) - 1)], np.inf)
        gap = next_start - n[:, 2]
        join = has_next & (gap < 0.25)
        n[join, 2] = np.minimum(next_start[join] + rng.uniform(0.01, 0.06, join.sum()), seconds)
    if rng.random() < instrument.params["pedal_prob"]:    # pedal down spans: notes ring to the release
        t, spans = float(rng.uniform(0, 1.0)), []
        while t < seconds:
            down = float(rng.uniform(0.8, 3.0))
            spans.append((t, min(t + down, seconds)))
            t += down + float(rng.uniform(0.05, 1.0))
        for a, b in spans:
            held = (n[:, 2] > a) & (n[:, 2] < b) & (n[:, 1] < b)
            n[held, 2] = b
    # one pitch sounds once at a time: the earlier note ends where the next of its pitch starts
    order = np.lexsort((n[:, 1], n[:, 0]))
    n, v = n[order], v[order]
    same = np.r_[n[1:, 0] == n[:-1, 0], False]
    nxt = np.r_[n[1:, 1], np.inf]
    n[:, 2] = np.where(same, np.minimum(n[:, 2], nxt), n[:, 2])
    keep = n[:, 2] - n[:, 1] >= 0.03
    n, v = n[keep], v[keep]
    order = np.argsort(n[:, 1], kind="stable")
    return n[order], v[order]


# ------------------------------------------------------------------------------------------------
# rendering
def _pitch_curve(n: int, rng: np.random.Generator, instrument: Instrument) -> np.ndarray:
    """Instantaneous frequency ratio (n,) of one note: delayed vibrato (cents) or flat."""
    if rng.random() >= instrument.params["vibrato_prob"]:
        return np.ones(n)
    t = np.arange(n) / SR
    rate, depth = rng.uniform(4.0, 7.0), rng.uniform(5.0, 35.0)      # Hz, cents (peak)
    delay = rng.uniform(0.0, 0.4)
    ramp = np.clip((t - delay) / 0.3, 0, 1)
    cents = depth * ramp * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    return 2 ** (cents / 1200)


def _amplitude(n_on: int, n_total: int, velocity: int, instrument: Instrument, rng: np.random.Generator,
               release_s: float) -> np.ndarray:
    """Note envelope (n_total,): linear attack, sustain with crescendo and tremolo or an exponential
    decay, exponential release from the note-off (sample n_on)."""
    t = np.arange(n_total) / SR
    attack = rng.uniform(*instrument.params["attack"])
    env = np.clip(t / attack, 0, 1) if attack > 0 else np.ones(n_total)
    if instrument.sustained:
        hold = max(n_on / SR, 1e-3)
        cresc_db = rng.uniform(-8, 8) if rng.random() < 0.5 else 0.0    # crescendo or diminuendo
        env = env * 10 ** (cresc_db * np.clip(t / hold, 0, 1) / 20)
        if rng.random() < instrument.params["tremolo_prob"]:
            env = env * (1 + rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * rng.uniform(3, 8) * t))
    else:
        env = env * np.exp(-t * 6.9 / instrument.params["decay_s"])      # -60 dB after decay_s
    after = t - n_on / SR
    env = np.where(after > 0, env[min(n_on, n_total - 1)] * np.exp(-np.maximum(after, 0) / release_s), env)
    return env * (velocity / 127.0) ** 1.5


def _harmonic_note(instrument: Instrument, f0: float, ratio: np.ndarray, amp: np.ndarray, velocity: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Sum of partials k = 1..K under the instrument's envelope; decaying instruments lose their upper
    partials faster; soft notes are darker."""
    p = instrument.params
    n = len(amp)
    phase = 2 * np.pi * np.cumsum(f0 * ratio) / SR
    t = np.arange(n) / SR
    slope = p.get("slope", 0.0)
    softness = 1 - velocity / 127.0
    out = np.zeros(n)
    for k in range(1, MAX_PARTIALS + 1):
        stretch = np.sqrt(1 + p["stiffness"] * k * k)
        hz = k * f0 * stretch
        if hz * 1.03 > MAX_PARTIAL_HZ:
            break
        gain = float(instrument.partial_gain(np.array([hz]))[0]) * k ** (-slope - 0.6 * softness)
        if k % 2 == 0:
            gain *= 10 ** (p["even_db"] / 20)
        wave = np.sin(k * stretch * phase + rng.uniform(0, 2 * np.pi))
        if not instrument.sustained and p["partial_damping"] > 0:
            wave = wave * np.exp(-t * p["partial_damping"] * (k - 1) * 6.9 / p["decay_s"])
        out += gain * wave
    return out * amp


def _fm_note(instrument: Instrument, f0: float, ratio: np.ndarray, amp: np.ndarray, velocity: int) -> np.ndarray:
    p = instrument.params
    n = len(amp)
    t = np.arange(n) / SR
    phase = 2 * np.pi * np.cumsum(f0 * ratio) / SR
    m = p["ratio"]
    # Carson's bandwidth (index + 1) * m * f0 kept under the alias limit
    index = min(p["index"] * (0.4 + 0.6 * velocity / 127), max(MAX_PARTIAL_HZ / (m * f0) - 1.5, 0.0))
    index_t = index * (np.exp(-t / p["index_decay_s"]) * 0.7 + 0.3)
    return np.sin(phase + index_t * np.sin(m * phase)) * amp


def _allpass_coefficient(delay: float, w: float) -> float:
    """C of the first-order allpass (C + z^-1) / (1 + C z^-1) whose phase delay at ``w`` (rad/sample) is
    ``delay`` samples (0 < delay < 2); the phase delay falls as C rises, so bisection finds it."""
    lo, hi = -0.999, 0.999
    for _ in range(50):
        c = (lo + hi) / 2
        z = np.exp(-1j * w)
        d = -np.angle((c + z) / (1 + c * z)) / w
        lo, hi = (c, hi) if d > delay else (lo, c)
    return (lo + hi) / 2


def _pluck_note(instrument: Instrument, f0: float, n_total: int, n_on: int, velocity: int, release_s: float,
                rng: np.random.Generator) -> np.ndarray:
    """Karplus-Strong string: a noise burst circulating in a loop of z^-N, the two-point average
    (damping, half a sample of delay) and a first-order allpass that supplies the fractional delay,
    so the loop lasts exactly SR / f0 samples at the fundamental (Jaffe & Smith, 1983)."""
    from scipy.signal import lfilter

    p = instrument.params
    period = SR / f0
    w = 2 * np.pi * f0 / SR
    # damping filter (1 - rho) + rho z^-1: the classic two-point average (rho 0.5) loses too much at
    # high pitches (cos(w/2) each period: a C7 dies in 50 ms), so rho is cut until the filter alone
    # costs at most -30 dB over decay_s, and the loop gain g supplies the rest of the -60 dB
    q = 10 ** (-3 / (p["decay_s"] * f0))                          # |H(w)|^2 allowed per period
    m = min(0.25, (1 - q) / (2 * (1 - np.cos(w))))
    rho = (1 - np.sqrt(1 - 4 * m)) / 2
    damping = np.array([1 - rho, rho])
    h = (1 - rho) + rho * np.exp(-1j * w)
    g = 10 ** (-3 / (p["decay_s"] * f0)) / abs(h)                 # < 1: |h| >= 10^(-1.5 / (decay_s f0))
    d_damping = -np.angle(h) / w
    n_delay = max(int(np.floor(period - d_damping - 0.1)), 1)
    c = _allpass_coefficient(period - d_damping - n_delay, w)
    burst_len = max(int(round(period)), 2)
    burst = rng.uniform(-1, 1, burst_len)
    bright = p["brightness"] * (0.5 + 0.5 * velocity / 127)
    burst = lfilter([bright], [1, -(1 - bright)], burst)     # darker excitation, darker string
    cut = int(round(p["pluck_position"] * burst_len))
    if cut > 0:                                              # plucking point: a comb on the excitation
        burst[cut:] -= burst[:-cut] * 0.8
    burst -= burst.mean()          # the loop keeps DC as long as the note: a short burst's mean would dominate
    x = np.zeros(n_total)
    x[:burst_len] = burst
    # y = x + g H(z) A(z) z^-N y with A = (c + z^-1)/(1 + c z^-1): times (1 + c z^-1)
    num = np.array([1.0, c])
    den = np.zeros(n_delay + 3)
    den[0], den[1] = 1.0, c
    loop = g * np.convolve(damping, [c, 1.0])                # g H(z) (c + z^-1)
    den[n_delay:n_delay + 3] -= loop
    y = lfilter(num, den, x)
    y = lfilter([1.0, -1.0], [1.0, -0.995], y)               # DC blocker (~18 Hz)
    t_after = (np.arange(n_total) - n_on) / SR
    y = y * np.where(t_after > 0, np.exp(-np.maximum(t_after, 0) / release_s), 1.0)   # damped at note-off
    return y * (velocity / 127.0) ** 1.5 / (np.abs(burst).max() + 1e-9)


def _noise_band(n: int, f0: float, amp: np.ndarray, level_db: float, rng: np.random.Generator) -> np.ndarray:
    """Breath or bow noise: white noise band-passed over the first partials, following the envelope."""
    from scipy.signal import butter, sosfilt

    if level_db <= -79:
        return np.zeros(n)
    lo, hi = max(f0 * 0.7, 30.0), min(f0 * 8, MAX_PARTIAL_HZ)
    if hi <= lo * 1.1:
        lo, hi = hi / 2, hi
    sos = butter(2, [lo, hi], btype="bandpass", fs=SR, output="sos")
    noise = sosfilt(sos, rng.standard_normal(n))
    noise /= np.sqrt(np.mean(noise ** 2)) + 1e-12
    return noise * amp * 10 ** (level_db / 20)


def render_note(instrument: Instrument, pitch: int, seconds_on: float, velocity: int,
                rng: np.random.Generator) -> np.ndarray:
    """One note held ``seconds_on`` (to its note-off) plus its release tail: float64 (samples,)."""
    release = instrument.params["release"]
    n_on = max(int(round(seconds_on * SR)), 1)
    n_total = n_on + int(round(release * 5 * SR))             # the tail down to -43 dB
    f0 = midi_hz(pitch)
    if instrument.family == "pluck":
        return _pluck_note(instrument, f0, n_total, n_on, velocity, release, rng)
    ratio = _pitch_curve(n_total, rng, instrument)
    amp = _amplitude(n_on, n_total, velocity, instrument, rng, release)
    if instrument.family == "fm":
        wave = _fm_note(instrument, f0, ratio, amp, velocity)
    else:
        wave = _harmonic_note(instrument, f0, ratio, amp, velocity, rng)
        wave /= np.abs(wave).max() / max(amp.max(), 1e-9) + 1e-12      # the peak follows the envelope's
    return wave + _noise_band(n_total, f0, amp, instrument.params["noise_db"], rng)


def render_part(instrument: Instrument, notes: np.ndarray, velocities: np.ndarray, seconds: float,
                rng: np.random.Generator) -> np.ndarray:
    """A part of performed notes (n, 3) (pitch, start_s, end_s) played by ``instrument``:
    float32 (round(seconds * SR),), not normalised."""
    total = int(round(seconds * SR))
    out = np.zeros(total)
    for (pitch, start, end), vel in zip(notes, velocities):
        a = int(round(start * SR))
        if a >= total:
            continue
        wave = render_note(instrument, int(pitch), float(end - start), int(vel), rng)
        b = min(total, a + len(wave))
        out[a:b] += wave[:b - a]
    return out.astype(np.float32)
