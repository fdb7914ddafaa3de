"""Procedural instruments (training/synth.py): the audio they make lines up with their labels."""
import numpy as np
import pytest

pytest.importorskip("scipy")

from timbreamt.core import constants as C  # noqa: E402
from timbreamt.training import synth as S  # noqa: E402

SR = C.SAMPLE_RATE


def f0_autocorrelation(x: np.ndarray) -> float:
    """Fundamental (Hz) of a steady periodic segment: the first autocorrelation peak past the central
    lobe that reaches 0.93 of the highest, refined by a parabola. Independent of any label."""
    x = x - x.mean()
    n = len(x)
    r = np.fft.irfft(np.abs(np.fft.rfft(x, 2 * n)) ** 2)[:n]
    lo, hi = max(int(np.argmax(r < 0)), 2), int(SR / 25)
    seg = r[lo:hi]
    i = lo + int(np.argmax(seg > 0.93 * seg.max()))
    while i + 1 < hi and r[i + 1] > r[i]:
        i += 1
    a, b, c = r[i - 1], r[i], r[i + 1]
    return SR / (i + 0.5 * (a - c) / (a - 2 * b + c))


def frame_energy(x: np.ndarray) -> np.ndarray:
    frames = len(x) // C.HOP
    return (x[:frames * C.HOP].astype(np.float64).reshape(frames, C.HOP) ** 2).mean(axis=1)


@pytest.mark.parametrize("family", S.FAMILIES)
def test_every_family_sounds_at_its_labelled_pitch(family):
    rng = np.random.default_rng(1)
    for draw in range(3):
        instrument = S.draw_instrument(family, rng)
        instrument.params["vibrato_prob"] = 0.0          # a steady pitch to measure
        instrument.params["tremolo_prob"] = 0.0
        for pitch in (28, 40, 55, 69, 84, 100):
            wave = S.render_note(instrument, pitch, 0.8, 100, rng)
            assert np.isfinite(wave).all() and np.abs(wave).max() > 1e-3, (family, pitch)
            f0 = f0_autocorrelation(wave[int(0.3 * SR):int(0.6 * SR)])
            cents = 1200 * np.log2(f0 / S.midi_hz(pitch))
            assert abs(cents) < 20, (family, draw, pitch, cents)


@pytest.mark.parametrize("family", S.FAMILIES)
def test_onsets_and_offsets_line_up_with_labels_even_with_the_slowest_attack(family):
    """The label convention: onset = the start of the excitation. With a linear attack of at most
    MAX_ATTACK_S the energy is within 20 dB of the note's peak after 0.1 x MAX_ATTACK_S (25 ms): inside
    mir_eval's 50 ms. After the note-off, the release takes the energy 20 dB down within 0.3 s."""
    rng = np.random.default_rng(2)
    instrument = S.draw_instrument(family, rng)
    instrument.params.update(vibrato_prob=0.0, tremolo_prob=0.0, release=S.RELEASE_S[1])
    if instrument.params["attack"][1] > 0:
        instrument.params["attack"] = (S.MAX_ATTACK_S, S.MAX_ATTACK_S)     # the slowest attack there is
    starts = np.array([0.3, 1.6, 2.9, 4.2])
    notes = np.stack([np.array([50, 62, 71, 45]), starts, starts + 0.7], axis=1).astype(np.float32)
    audio = S.render_part(instrument, notes, np.full(4, 90), 5.4, rng)
    assert audio.dtype == np.float32 and len(audio) == int(round(5.4 * SR))
    energy = frame_energy(audio)
    fps = SR / C.HOP
    assert not audio[:int(notes[0, 1] * SR)].any()                   # nothing sounds before the first label
    for _, start, end in notes:
        a, b = int((start - 0.15) * fps), int((start + 0.6) * fps)
        peak = energy[a:b].max()
        first = a + int(np.argmax(energy[a:b] > 0.01 * peak))      # first frame within 20 dB of the peak
        assert abs(first / fps - start) <= 0.03 + C.HOP / SR, (family, start, first / fps)
        after = energy[int((end + 0.3) * fps)]
        assert after < 0.01 * peak, (family, end)


def test_fit_register_moves_parts_by_octaves_into_the_register():
    notes = np.array([[30, 0, 1], [42, 1, 2], [90, 2, 3], [64, 3, 4]], dtype=np.float32)
    out = S.fit_register(notes, (55, 79))
    assert out[:, 0].min() >= 55 and out[:, 0].max() <= 79
    assert np.all((out[:, 0] - notes[:, 0]) % 12 == 0)               # pitch classes kept
    np.testing.assert_array_equal(out[:, 1:], notes[:, 1:])
    assert len(S.fit_register(np.zeros((0, 3)), (40, 60))) == 0


def test_performance_keeps_labels_consistent_and_is_deterministic():
    rng = np.random.default_rng(3)
    base = np.array([[60, 0.0, 0.4], [62, 0.5, 0.9], [64, 1.0, 1.4], [60, 1.5, 1.9], [67, 2.0, 2.6]], np.float32)
    vel = np.full(5, 80)
    bowed = S.draw_instrument("bowed", rng)
    bowed.params.update(legato_prob=1.0)
    notes, v = S.perform(base, vel, bowed, 3.0, np.random.default_rng(4))
    assert len(notes) == len(v) == 5 and np.all(np.diff(notes[:, 1]) >= 0)
    assert notes[:, 0].min() >= bowed.register[0] and notes[:, 0].max() <= bowed.register[1]
    assert np.abs(notes[:, 1] - base[:, 1]).max() < 0.08              # jitter of a human player, not more
    assert np.any(notes[:-1, 2] > notes[1:, 1])                       # legato: a note held into the next
    for p in np.unique(notes[:, 0]):                                  # one pitch never sounds twice at once
        same = notes[notes[:, 0] == p]
        assert np.all(same[:-1, 2] <= same[1:, 1] + 1e-6)
    again, _ = S.perform(base, vel, bowed, 3.0, np.random.default_rng(4))
    np.testing.assert_array_equal(notes, again)
    pluck = S.draw_instrument("pluck", rng)
    pluck.params.update(pedal_prob=1.0)
    held, _ = S.perform(base, vel, pluck, 3.0, np.random.default_rng(5))
    assert (held[:, 2] - held[:, 1]).sum() > (base[:, 2] - base[:, 1]).sum() + 0.3   # the pedal lengthens notes


def test_rendering_is_deterministic_and_bad_family_is_refused():
    inst = S.draw_instrument("additive", np.random.default_rng(6))
    notes = np.array([[60, 0.1, 0.5], [64, 0.3, 0.9]], np.float32)
    a = S.render_part(inst, notes, np.array([90, 70]), 1.0, np.random.default_rng(7))
    b = S.render_part(inst, notes, np.array([90, 70]), 1.0, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="unknown synthesis family 'organ'"):
        S.draw_instrument("organ", np.random.default_rng(0))
