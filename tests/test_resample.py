"""core/resample.py: the one resampler of the CLI and the page."""
import numpy as np
import pytest

from timbreamt.core.resample import StreamResampler, resample

RATES = (8000, 16000, 22050, 32000, 44100, 48000, 96000)


@pytest.mark.parametrize("rate", RATES)
def test_streaming_equals_one_shot_bit_for_bit(rate):
    rng = np.random.default_rng(rate)
    x = (rng.standard_normal(rate * 2) * 0.1).astype(np.float32)
    whole = resample(x, rate, 44100)
    assert whole.dtype == np.float32 and len(whole) == -(-len(x) * 44100 // rate)
    s = StreamResampler(rate, 44100)
    parts, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 9000))
        parts.append(s.process(x[i:i + n]))
        i += n
    parts.append(s.flush())
    assert np.array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize("rate", (16000, 22050, 32000, 48000, 96000))
def test_a_tone_keeps_its_shape_and_level(rate):
    t = np.arange(rate * 2) / rate
    y = resample(np.sin(2 * np.pi * 1000.0 * t).astype(np.float32), rate, 44100)
    ref = np.sin(2 * np.pi * 1000.0 * np.arange(len(y)) / 44100)
    assert np.abs(y - ref)[2000:-2000].max() < 1e-4


def test_frequencies_above_the_new_nyquist_are_removed():
    rate = 96000
    t = np.arange(rate) / rate
    y = resample(np.sin(2 * np.pi * 30000.0 * t).astype(np.float32), rate, 44100)   # would alias to 14.1 kHz
    assert np.sqrt(np.mean(y[2000:-2000] ** 2)) < 1e-4


def test_same_rate_is_a_copy_and_edge_lengths():
    x = np.arange(5, dtype=np.float32)
    y = resample(x, 44100, 44100)
    assert np.array_equal(x, y) and y is not x
    assert len(resample(np.zeros(0, np.float32), 48000, 44100)) == 0
    assert len(resample(np.ones(1, np.float32), 48000, 44100)) == 1


@pytest.mark.parametrize("bad", [0, -44100, 44100.5, "44100", True])
def test_bad_rates_are_refused(bad):
    with pytest.raises(ValueError, match="positive integer"):
        StreamResampler(bad, 44100)


def test_stereo_and_use_after_flush_are_refused():
    s = StreamResampler(48000, 44100)
    with pytest.raises(ValueError, match="mono"):
        s.process(np.zeros((10, 2), np.float32))
    s.flush()
    with pytest.raises(ValueError, match="flushed"):
        s.process(np.zeros(10, np.float32))


@pytest.mark.parametrize("rate", [22050, 48000, 16000])
def test_slices_and_gather_give_the_same_bits(rate, monkeypatch):
    """The two evaluation orders of the polyphase filter (by contiguous slices, by gathering) do the
    same float32 operations in the same order: identical outputs, streamed or not."""
    from timbreamt.core import resample as R

    x = np.random.default_rng(rate).standard_normal(rate * 3).astype(np.float32) * 0.3
    results = []
    for limit in (0, 10 ** 6):            # 0: always gather; 10**6: always slices
        monkeypatch.setattr(R, "MAX_PHASES_BY_SLICES", limit)
        s = R.StreamResampler(rate, 44100)
        results.append(np.concatenate([s.process(x[i:i + 5000]) for i in range(0, len(x), 5000)] + [s.flush()]))
    assert np.array_equal(results[0], results[1])
    assert np.array_equal(results[0], R.resample(x, rate, 44100))
