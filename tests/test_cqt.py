import numpy as np
import pytest

torch = pytest.importorskip("torch")

from timbreamt.core import constants as C  # noqa: E402
from timbreamt.training.cqt import CQT, cqt_frequencies, numpy_cqt_bin  # noqa: E402


@pytest.fixture(scope="module")
def cqt():
    return CQT()


def sine(freq, seconds=3.0, sr=C.SAMPLE_RATE):
    t = np.arange(int(seconds * sr)) / sr
    return np.sin(2 * np.pi * freq * t).astype(np.float32)


def energy(cqt, audio):
    out = cqt(torch.from_numpy(audio)[None])[0].numpy()
    e = out[0] ** 2 + out[1] ** 2
    mid = e.shape[1] // 2
    return e[:, mid - 20: mid + 20].mean(axis=1), out


def test_shape_and_frame_count(cqt):
    for n in (1, 255, 256, 257, 22050, 44101):
        out = cqt(torch.zeros(2, n))
        assert out.shape == (2, 2, C.N_BINS, (n - 1) // C.HOP + 1)


@pytest.mark.parametrize("octave", range(8))
def test_sine_peaks_in_its_bin_in_every_octave(cqt, octave):
    pitch = 24 + 12 * octave + 5 if octave < 7 else 24 + 12 * 7 - 1
    e, _ = energy(cqt, sine(440.0 * 2 ** ((pitch - 69) / 12)))
    assert int(np.argmax(e)) == 3 * (pitch - 24) + 1


def test_unit_sine_energy_flat_within_1db(cqt):
    peaks = []
    for octave in range(8):
        f = C.FMIN * 2 ** (octave + 0.5)
        e, _ = energy(cqt, sine(f))
        peaks.append(10 * np.log10(e.max()))
    peaks = np.array(peaks)
    assert peaks.max() - peaks.min() < 1.0, peaks
    # L1-normalised kernels: a unit sine gives magnitude 0.5, energy 0.25 (-6 dB)
    assert np.all(np.abs(peaks - 10 * np.log10(0.25)) < 1.0)


def test_matches_direct_numpy_cqt(cqt):
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(C.SAMPLE_RATE * 2) * 0.1).astype(np.float32)
    audio += sine(5000.0, 2.0) + sine(7000.0, 2.0)
    out = cqt(torch.from_numpy(audio)[None])[0].numpy()
    freqs = cqt_frequencies()
    centre_frame = (len(audio) // 2) // C.HOP
    padded = np.pad(audio.astype(np.float64), (0, 0))
    for b in (252, 260, 270, 280, 287):   # top octave: no decimation, so an exact match is due
        want = numpy_cqt_bin(padded[: centre_frame * C.HOP * 2], freqs[b])
        got = complex(out[0, b, centre_frame], out[1, b, centre_frame])
        assert abs(got - want) < 1e-4 + 1e-3 * abs(want), (b, got, want)
    # lower octaves go through the FIR decimation: magnitudes of a steady tone still agree
    low = sine(freqs[100], 6.0)
    out = cqt(torch.from_numpy(low)[None])[0].numpy()
    c = (len(low) // 2) // C.HOP
    want = abs(numpy_cqt_bin(low[: c * C.HOP * 2].astype(np.float64), freqs[100]))
    got = abs(complex(out[0, 100, c], out[1, 100, c]))
    assert abs(got - want) < 0.06 * want, (got, want)


@pytest.mark.parametrize("phases", [1, 8, 64])
def test_polyphase_decimator_equals_strided_lowpass(phases):
    import torch

    from timbreamt.training.cqt import HalfBandDecimator, lowpass_kernel

    dec = HalfBandDecimator(phases)
    h = torch.tensor(lowpass_kernel(), dtype=torch.float32)[None, None]
    rng = np.random.default_rng(phases)
    for n in (1, 2, 3, 2 * phases, 2 * phases + 1, 5000, 22050 + 17):
        x = torch.from_numpy(rng.standard_normal((2, 1, n)).astype(np.float32))
        want = torch.nn.functional.conv1d(x, h, stride=2, padding=h.shape[-1] // 2)
        got = dec(x)
        assert got.shape == want.shape, n
        assert float((got - want).abs().max()) < 1e-5, n
    # a chunk starting at a multiple of 2 * phases samples computes its outputs bit for bit
    x = torch.from_numpy(rng.standard_normal((1, 1, 9000)).astype(np.float32))
    start = 2 * phases * 3
    assert torch.equal(dec(x)[..., start // 2 + 64: start // 2 + 600], dec(x[..., start:])[..., 64:600])
