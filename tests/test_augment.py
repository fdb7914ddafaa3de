"""Augmentations (training/augment.py): same length, finite, and notes stay where their labels are."""
import numpy as np
import pytest

pytest.importorskip("scipy")

from timbreamt.core import constants as C  # noqa: E402
from timbreamt.training import augment as A  # noqa: E402

SR = C.SAMPLE_RATE
STARTS = (0.5, 1.6, 2.7, 3.5)


def tone_bursts() -> np.ndarray:
    """Four decaying 440 Hz tones starting at STARTS (s), 4.5 s in all."""
    x = np.zeros(int(4.5 * SR), np.float32)
    n = np.arange(6000)
    for t in STARTS:
        a = int(t * SR)
        x[a:a + len(n)] += 0.5 * np.sin(2 * np.pi * 440 * n / SR) * np.exp(-n / 2500)
    return x


def detected_onsets(y: np.ndarray) -> np.ndarray:
    """Per labelled start: first 64-sample-smoothed sample within 10 dB of that note's peak, s."""
    e = np.convolve(y.astype(np.float64) ** 2, np.ones(64) / 64, mode="same")
    out = []
    for t in STARTS:
        a, b = int((t - 0.2) * SR), int((t + 0.2) * SR)
        out.append((a + int(np.argmax(e[a:b] > 0.1 * e[a:b].max()))) / SR)
    return np.array(out)


@pytest.mark.parametrize("name", ["room", "eq", "compress", "noise", "band_limit"])
def test_every_augmentation_keeps_length_and_onsets(name):
    x = tone_bursts()
    clean = detected_onsets(x)
    fn = A.room_reverb if name == "room" else A.AUGMENTATIONS[name]
    for seed in range(3):
        kwargs = {"snr_db": 25.0} if name == "noise" else {}
        y = fn(x, np.random.default_rng(seed), **kwargs)
        assert y.dtype == np.float32 and y.shape == x.shape and np.isfinite(y).all()
        shift = detected_onsets(y) - clean
        assert np.abs(shift).max() <= C.HOP / SR / 2, (name, seed, shift)      # within half a frame


def test_room_impulse_response_starts_with_its_direct_path():
    for seed in range(3):
        rir = A.room_impulse_response(np.random.default_rng(seed))
        assert rir[0] == pytest.approx(1.0) and np.abs(rir).argmax() == 0
        assert len(rir) > int(0.05 * SR)                   # a reverberant tail follows
        assert np.abs(rir[int(0.02 * SR):]).max() > 1e-3


def test_band_limit_noise_and_compression_do_what_they_say():
    rng = np.random.default_rng(0)
    white = rng.standard_normal(SR * 2).astype(np.float32) * 0.1
    low = A.band_limit(white, rng, cutoff_hz=4000.0, holes=False)
    spec, f = np.abs(np.fft.rfft(low)) ** 2, np.fft.rfftfreq(len(low), 1 / SR)
    assert spec[f > 6000].mean() < 1e-4 * spec[f < 3000].mean()           # > 40 dB down past the cut
    x = tone_bursts()
    noisy = A.add_noise(x, rng, snr_db=20.0, colour="pink")
    snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((noisy - x).astype(np.float64) ** 2))
    assert snr == pytest.approx(20.0, abs=0.2)
    loud_soft = np.concatenate([0.9 * np.sin(np.arange(SR) * 0.1), 0.05 * np.sin(np.arange(SR) * 0.1)]).astype(np.float32)
    squashed = A.compress(loud_soft, rng, ratio=6.0, threshold_db=-30.0)

    def level_gap(y):
        return 10 * np.log10(np.mean(y[SR // 4:SR] ** 2) / np.mean(y[SR + SR // 4:] ** 2))
    assert level_gap(squashed) < level_gap(loud_soft) - 6        # loud and soft brought closer
    assert np.abs(squashed).max() == pytest.approx(np.abs(loud_soft).max(), rel=1e-3)


def test_chain_with_nothing_drawn_changes_nothing_and_bad_shapes_are_refused():
    x = tone_bursts()
    np.testing.assert_array_equal(A.random_chain(x, np.random.default_rng(0), prob=0.0), x)
    for fn in (A.room_reverb, A.equalise, A.compress, A.add_noise, A.band_limit, A.random_chain):
        with pytest.raises(ValueError, match="audio must be 1-D"):
            fn(np.zeros((2, 100), np.float32), np.random.default_rng(0))
    assert np.all(A.add_noise(np.zeros(100, np.float32), np.random.default_rng(0)) == 0)   # silence stays silent
