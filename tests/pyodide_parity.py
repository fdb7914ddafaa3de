"""Post-processing on seeded synthetic maps: run by CPython (pytest) and by Pyodide (Node), which must
print the same JSON. Maps have notes with two timbres; several windows exercise the stitching."""
import hashlib
import json

import numpy as np

from timbreamt.core.browser_job import BrowserJob, BrowserResampler
from timbreamt.core.resample import resample

rng = np.random.default_rng(1234)
n_samples = 44100 * 20
job = BrowserJob(n_samples, "synthetic", True, "auto", 44100, onset_threshold=0.5, frame_threshold=0.3,
                 min_note_frames=6, core_frames=300, context_frames=40)
total = sum(w.core_end - w.core_start for w in job.windows)
onset = (rng.random((84, total)) ** 8 * 0.4).astype(np.float32)
frame = (rng.random((84, total)) ** 6 * 0.25).astype(np.float32)
emb = rng.standard_normal((12, 84, total)).astype(np.float32) * 0.3
centres = np.eye(12, dtype=np.float32)[:2]
for i in range(60):
    pitch, start = int(rng.integers(10, 70)), int(rng.integers(0, total - 60))
    length, who = int(rng.integers(10, 50)), i % 2
    frame[pitch, start:start + length] = rng.uniform(0.5, 0.95)
    onset[pitch, start] = rng.uniform(0.6, 0.99)
    emb[:, pitch, start:start + length] += centres[who][:, None] * 3
emb /= np.linalg.norm(emb, axis=0, keepdims=True)
for i, w in enumerate(job.windows):
    a, b = w.frame_start, min(total, (w.in_end + 511) // 512)
    b = max(b, w.core_end)
    job.add(i, b - a, onset[:, a:b].tobytes(), frame[:, a:b].tobytes(), emb[:, :, a:b].tobytes())
result = job.finish()
midi_sha = hashlib.sha256(job.midi()).hexdigest()
regrouped = json.loads(job.regroup(3))
# the page and the CLI resample with the same code: the same float32 bytes in Pyodide and CPython
signal = (rng.standard_normal(48000 * 2) * 0.2).astype(np.float32)
resampled = {}
for rate in (16000, 22050, 32000, 48000, 96000):
    r = BrowserResampler(rate)
    x = signal[: rate * 2] if len(signal) >= rate * 2 else np.tile(signal, 2)[: rate * 2]
    streamed = np.concatenate([r.process(x[:12345].tobytes()), r.process(x[12345:].tobytes()), r.flush()])
    assert np.array_equal(streamed, resample(x, rate, 44100))
    resampled[str(rate)] = hashlib.sha256(streamed.tobytes()).hexdigest()
print(json.dumps({"json": json.loads(result), "midi_sha256": midi_sha, "regrouped": regrouped,
                  "resampled": resampled}, sort_keys=True))
