"""Post-processing on seeded synthetic maps: run by CPython (pytest) and by Pyodide (Node), which must
print the same JSON. Maps have notes with two timbres; several windows exercise the stitching."""
import hashlib
import json

import numpy as np

from timbreamt.core.browser_job import BrowserJob

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
print(json.dumps({"json": json.loads(result), "midi_sha256": hashlib.sha256(job.midi()).hexdigest()}, sort_keys=True))
