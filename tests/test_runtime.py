"""The transcription runtime: chunking, bad input, outputs, CLI. Uses the shipped ONNX models."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import REFERENCE_MODELS, tone
from timbreamt.core.constants import CROP_MARGIN_FRAMES, GRAPH_HOP, NOTE_CROP_MARGIN_FRAMES, PEAK_MARGIN
from timbreamt.core.windows import n_frames, plan_windows, window_crop
from timbreamt.core.errors import AudioError, ModelError, OutputError
from timbreamt.runtime.transcriber import Transcriber, _windows_from_stream
from timbreamt.runtime.model import ARENA_SHRINKAGE, Model
from timbreamt.core.transcription import Transcription

SR = 44100


@pytest.fixture(scope="module")
def sept(shipped_models):
    return Transcriber(shipped_models / "septimbre.onnx")


@pytest.fixture(scope="module")
def basic(shipped_models):
    return Transcriber(shipped_models / "basicamt.onnx")


def write(path: Path, data: np.ndarray, sr: int = SR, subtype: str | None = None) -> Path:
    sf.write(str(path), data, sr, subtype=subtype)
    return path


def melody(seconds=6.0, sr=SR):
    out = np.zeros(int(seconds * sr), np.float32)
    for i, p in enumerate([60, 64, 67, 72, 67, 64]):
        s = int(i * sr * seconds / 6)
        seg = tone(p, seconds / 6, sr)
        out[s:s + len(seg)] += seg
    return out


# ---------------------------------------------------------------------------------- chunking
def test_plan_covers_all_frames_once():
    for n in (1, 511, 512, 44100 * 61 + 17):
        windows = plan_windows(n, core_frames=700, context_frames=264)
        cores = [f for w in windows for f in range(w.core_start, w.core_end)]
        assert cores == list(range(n_frames(n)))
        assert all(w.in_start % GRAPH_HOP == 0 and 0 <= w.in_start < w.in_end <= n for w in windows)


def test_streamed_windows_equal_planned_windows():
    n = 44100 * 50 + 333
    audio = np.arange(n, dtype=np.float32)
    blocks = [audio[i:i + 12345] for i in range(0, n, 12345)]
    got = [(w, chunk.copy()) for w, chunk, _, _ in _windows_from_stream(blocks, 700, 264)]
    assert [w for w, _ in got] == plan_windows(n, 700, 264)
    with pytest.raises(ValueError, match="multiples"):
        plan_windows(n, 701, 264)
    for w, chunk in got:
        assert np.array_equal(chunk, audio[w.in_start:w.in_end])


@pytest.mark.parametrize("name,margin", [("septimbre", None), ("septimbre", CROP_MARGIN_FRAMES),
                                         ("basicamt", NOTE_CROP_MARGIN_FRAMES)])
def test_chunked_maps_equal_whole_file_maps(shipped_models, name, margin):
    """Whole windows, and windows whose convolutions only run near the core (the graph's crop
    input, what the runtime uses: the encoder needs the wider margin), both give the whole file's
    maps, peak-picking margin included."""
    cropped = margin is not None
    model = Model(shipped_models / f"{name}.onnx")
    assert model.can_crop
    audio = np.tile(melody(), 6)[: SR * 30]
    rng = np.random.default_rng(0)
    audio = audio + rng.standard_normal(len(audio)).astype(np.float32) * 0.01
    whole = model.run(audio)
    parts = {k: [] for k in whole}
    margins = {k: [] for k in whole}
    crops = []
    for w, chunk, _, _ in _windows_from_stream([audio], 600, 264):
        crop = window_crop(w, n_frames(len(chunk)), margin) if cropped else (0, 0)
        crops.append(crop)
        out = model.run(chunk, crop)
        first = w.frame_start + crop[0]
        for k, v in out.items():
            assert v.shape[-1] == n_frames(len(chunk)) - sum(crop)
            parts[k].append(v[..., w.core_start - first:w.core_end - first])
            if k == "embedding":    # only the core's embeddings are used
                continue
            # the frames next to the core that peak picking reads must be exact too
            a, b = max(w.core_start - PEAK_MARGIN, 0), min(w.core_end + PEAK_MARGIN, whole[k].shape[-1])
            margins[k].append(np.abs(v[..., a - first:b - first] - whole[k][..., a:b]).max())
    if cropped:     # inner windows really drop frames on both sides
        assert any(c[0] > 0 and c[1] > 0 for c in crops), crops
    for k in whole:
        diff = np.abs(np.concatenate(parts[k], axis=-1) - whole[k])
        assert diff.max() < 1e-5, (k, diff.max())
        if k != "embedding":
            assert max(margins[k]) < 1e-5, (k, max(margins[k]))


def test_window_crop_keeps_the_core_and_margin():
    for w in plan_windows(44100 * 100, 600, 264):
        frames = n_frames(w.in_end - w.in_start)
        start, end = window_crop(w, frames)
        first, last = w.frame_start + start, w.frame_start + frames - end
        assert start % 4 == 0 and start >= 0 and end >= 0
        assert first <= max(0, w.core_start - CROP_MARGIN_FRAMES)
        assert last >= min(w.core_end + CROP_MARGIN_FRAMES, w.frame_start + frames)


def test_reference_graphs_run_uncropped(reference_dir):
    model = Model(REFERENCE_MODELS / "basicamt_44100.onnx")
    assert not model.can_crop
    with pytest.raises(ModelError, match="crop"):
        model.run(np.zeros(44100, np.float32), (4, 0))


def test_chunked_transcription_equals_whole_file(sept):
    audio = np.tile(melody(), 5)
    a = sept.transcribe(audio, sr=SR, instruments=2, core_frames=400)
    b = sept.transcribe(audio, sr=SR, instruments=2, core_frames=100000)
    assert a.to_dict() == b.to_dict()
    assert a.n_notes > 0


# ---------------------------------------------------------------------------------- results
def test_transcribes_reference_mix_into_tracks(sept, reference_dir):
    result = sept.transcribe(reference_dir / "three_mix.wav", instruments=3)
    assert len(result.tracks) == 3
    assert result.n_notes >= 10
    assert result.warnings == []
    assert result.sample_rate == 44100 and abs(result.duration - 3.8255) < 0.01
    d = result.to_dict()
    assert set(d) == {"version", "model", "sample_rate", "duration", "tracks"}
    for t in d["tracks"]:
        for n in t["notes"]:
            assert set(n) == {"pitch", "start", "end", "velocity"}
            assert 24 <= n["pitch"] <= 107 and 0 <= n["start"] < n["end"] <= result.duration + 0.05
            assert 1 <= n["velocity"] <= 127
    assert Transcription.from_json(result.to_json()).to_dict() == d


def test_auto_saying_one_instrument_suggests_giving_n(sept, reference_dir, tmp_path):
    """The estimate says 1 on this 3-instrument clip (a known limit): the result says how to do better,
    in the API's warnings and on the CLI's stderr; silence (no notes) says nothing."""
    from timbreamt.core.pipeline import AUTO_ONE_WARNING

    result = sept.transcribe(reference_dir / "three_mix.wav", instruments="auto")
    assert len(result.tracks) == 1 and result.warnings == [AUTO_ONE_WARNING]
    silent = sept.transcribe(np.zeros(SR * 2, np.float32), sr=SR, instruments="auto")
    assert silent.n_notes == 0 and silent.warnings == []
    out = subprocess.run([sys.executable, "-m", "timbreamt", "transcribe", str(reference_dir / "three_mix.wav"),
                          "-o", str(tmp_path), "--format", "json"], capture_output=True, text=True)
    assert out.returncode == 0 and "give their number" in out.stderr and "1 track(s) (auto)" in out.stdout


def test_melodia_follows_the_model_and_can_be_overridden(sept, reference_dir):
    wav = reference_dir / "three_mix.wav"
    assert sept.options().melodia == sept.model.defaults.melodia    # the graph's calibrated default
    key = lambda n: (n.pitch, n.start, n.end)          # noqa: E731
    with_m = {key(n) for t in sept.transcribe(wav, instruments=None, melodia=True).tracks for n in t.notes}
    without = {key(n) for t in sept.transcribe(wav, instruments=None, melodia=False).tracks for n in t.notes}
    # melodia only adds notes (from frame activity without an onset) after the onset-led ones
    assert without <= with_m


def test_arena_kept_for_note_graphs_only(basic, sept):
    """The note-only graph keeps onnxruntime's arena between windows (speed), the embedding graph
    shrinks it after each (memory); reused buffers must not carry anything from run to run."""
    key = ARENA_SHRINKAGE
    assert not basic.model.shrink_arena and sept.model.shrink_arena
    assert sept.model.run_options.get_run_config_entry(key) == "cpu:0"
    with pytest.raises(RuntimeError, match=key):
        basic.model.run_options.get_run_config_entry(key)
    assert basic.model.release_options.get_run_config_entry(key) == "cpu:0"    # a file's last window
    audio = np.tile(melody(), 4)
    first = basic.transcribe(audio, sr=SR, instruments=None, core_frames=400)
    basic.transcribe(np.random.default_rng(0).normal(0, 0.3, SR * 9).astype(np.float32), sr=SR, instruments=None)
    again = basic.transcribe(audio, sr=SR, instruments=None, core_frames=400)
    whole = basic.transcribe(audio, sr=SR, instruments=None, core_frames=100000)
    assert first.n_notes > 0
    assert first.to_dict() == again.to_dict() == whole.to_dict()


def test_deterministic(sept, reference_dir):
    a = sept.transcribe(reference_dir / "three_mix.wav", instruments="auto")
    b = sept.transcribe(reference_dir / "three_mix.wav", instruments="auto")
    assert a.to_dict() == b.to_dict()


def test_silence_gives_no_notes(sept, tmp_path):
    result = sept.transcribe(write(tmp_path / "silent.wav", np.zeros(SR * 5, np.float32)), instruments="auto")
    assert result.n_notes == 0 and result.duration == pytest.approx(5.0)


@pytest.mark.parametrize("rate", [8000, 192000])
def test_unusual_sample_rates(basic, tmp_path, rate):
    audio = melody(sr=rate)
    ref = basic.transcribe(melody(), sr=SR)
    got = basic.transcribe(write(tmp_path / f"r{rate}.wav", audio, rate))
    assert got.sample_rate == rate and got.duration == pytest.approx(6.0, abs=0.01)
    if rate == 192000:   # same content, resampled twice: (nearly) the same notes
        from timbreamt.training.metrics import note_scores

        def rows(r):
            return np.array([[n.start, n.end, n.pitch] for n in r.tracks[0].notes]).reshape(-1, 3)
        assert note_scores(rows(ref), rows(got))["f1"] >= 0.9


def test_six_channels_and_int16(basic, tmp_path):
    mono = melody()
    six = np.repeat(mono[:, None], 6, axis=1)
    a = basic.transcribe(write(tmp_path / "six.wav", six, subtype="PCM_16"))
    b = basic.transcribe(mono, sr=SR)
    assert [n.pitch for n in a.tracks[0].notes] == [n.pitch for n in b.tracks[0].notes]


@pytest.mark.parametrize("fmt", ["flac", "ogg", "mp3"])
def test_compressed_formats(basic, tmp_path, fmt):
    path = tmp_path / f"m.{fmt}"
    sf.write(str(path), melody(), SR, format=fmt.upper() if fmt != "ogg" else "OGG")
    result = basic.transcribe(path)
    assert {60, 64, 67} <= {n.pitch for n in result.tracks[0].notes}


# ---------------------------------------------------------------------------------- bad input
def test_bad_inputs_give_clear_errors(basic, tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 100)
    good = write(tmp_path / "good.wav", melody())
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:30])
    zero = write(tmp_path / "zero.wav", np.zeros(0, np.float32))
    cases = {empty: "empty file", junk: "not a readable audio file", truncated: "not a readable audio file",
             tmp_path: "directory", tmp_path / "missing.wav": "no such file", zero: "empty"}
    for path, words in cases.items():
        with pytest.raises(AudioError, match=words):
            basic.transcribe(path)


def test_lying_header_and_truncated_data(basic, tmp_path):
    good = write(tmp_path / "good.wav", melody(), subtype="PCM_16")
    data = bytearray(good.read_bytes())
    # claim 10 hours of data in the RIFF and data chunk sizes; only 6 s follow
    ten_hours = 10 * 3600 * SR * 2
    data[4:8] = struct.pack("<I", min(ten_hours + 36, 2**32 - 1))
    idx = data.index(b"data")
    data[idx + 4: idx + 8] = struct.pack("<I", min(ten_hours, 2**32 - 2))
    liar = tmp_path / "liar.wav"
    liar.write_bytes(bytes(data))
    result = basic.transcribe(liar)
    assert result.duration == pytest.approx(6.0, abs=0.01)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    assert basic.transcribe(cut).duration == pytest.approx(3.0, abs=0.05)


def test_nan_samples_rejected(basic, tmp_path):
    audio = melody()
    audio[SR * 2] = np.nan
    path = write(tmp_path / "nan.wav", audio, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        basic.transcribe(path)
    with pytest.raises(AudioError, match="NaN"):
        basic.transcribe(audio, sr=SR)


def test_array_input_validation(basic):
    with pytest.raises(AudioError, match="channels, samples"):
        basic.transcribe(np.zeros((2, SR), np.float32), sr=SR)
    with pytest.raises(AudioError, match="sample rate"):
        basic.transcribe(np.zeros(SR, np.float32), sr=0)
    with pytest.raises(ValueError, match="sample rate"):
        basic.transcribe(np.zeros(SR, np.float32))
    with pytest.raises(AudioError, match="empty"):
        basic.transcribe(np.zeros(0, np.float32), sr=SR)


def test_model_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        Model(tmp_path / "nope.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 50)
    with pytest.raises(ModelError, match="cannot load"):
        Model(corrupt)


def test_basicamt_cannot_separate(basic):
    with pytest.raises(ModelError, match="timbre embedding"):
        basic.transcribe(melody(), sr=SR, instruments=3)


def test_more_instruments_than_notes(sept):
    audio = tone(60, 1.0, SR)
    n = sept.transcribe(audio, sr=SR, instruments=None).n_notes
    assert n >= 1
    result = sept.transcribe(audio, sr=SR, instruments=n + 2)
    assert len(result.tracks) == n + 2 and result.n_notes == n
    assert sum(1 for t in result.tracks if not t.notes) >= 2
    assert any("only" in w for w in result.warnings)


def test_reference_models_follow_the_contract(reference_dir):
    t = Transcriber(REFERENCE_MODELS / "septimbre_44100.onnx")
    result = t.transcribe(reference_dir / "three_mix.wav", instruments=3)
    assert len(result.tracks) == 3 and result.n_notes > 10


# ---------------------------------------------------------------------------------- CLI + outputs
def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "timbreamt", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def test_cli_batch_outputs_and_errors(tmp_path, reference_dir, shipped_models):
    import mido

    out = tmp_path / "out"
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"nope" * 10)
    r = run_cli("transcribe", reference_dir / "three_mix.wav", bad, reference_dir / "piano_short.wav",
                "-o", out, "--instruments", "3", "--format", "midi,json,csv", "--quiet")
    assert r.returncode != 0
    assert "bad.wav" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{s}.{e}" for s in ("three_mix", "piano_short") for e in ("mid", "json", "csv"))
    assert "three_mix.wav" in r.stdout and "3 track(s)" in r.stdout
    data = json.loads((out / "three_mix.json").read_text())
    mid = mido.MidiFile(str(out / "three_mix.mid"))
    note_tracks = [t for t in mid.tracks if any(m.type == "note_on" for m in t)]
    assert len(mid.tracks) == 4
    names = [next(m.name for m in t if m.type == "track_name") for t in mid.tracks[1:]]
    assert names == [t["name"] for t in data["tracks"]]
    channels = [{m.channel for m in t if m.type == "note_on"} for t in note_tracks]
    assert all(len(c) == 1 for c in channels) and len(set().union(*channels)) == len(note_tracks)
    n_json = sum(len(t["notes"]) for t in data["tracks"])
    assert sum(1 for t in mid.tracks for m in t if m.type == "note_on") == n_json
    lines = (out / "three_mix.csv").read_text().splitlines()
    assert lines[0] == "track,pitch,start_s,end_s,velocity" and len(lines) == n_json + 1

    # no overwrite without --overwrite: the file is untouched
    before = (out / "three_mix.json").read_bytes()
    r = run_cli("transcribe", reference_dir / "three_mix.wav", "-o", out, "--quiet")
    assert r.returncode != 0 and "exists" in r.stderr
    assert (out / "three_mix.json").read_bytes() == before
    r = run_cli("transcribe", reference_dir / "three_mix.wav", "-o", out, "--quiet", "--overwrite",
                "--model", "basicamt")
    assert r.returncode == 0, r.stderr
    assert len(json.loads((out / "three_mix.json").read_text())["tracks"]) == 1


def test_cli_bad_model_and_options(tmp_path, reference_dir):
    r = run_cli("transcribe", reference_dir / "three_mix.wav", "-o", tmp_path, "--model", tmp_path / "x.onnx")
    assert r.returncode != 0 and "model file not found" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("transcribe", reference_dir / "three_mix.wav", "-o", tmp_path, "--instruments", "zero")
    assert r.returncode == 2 and "positive integer" in r.stderr
    r = run_cli("transcribe", reference_dir / "three_mix.wav", "-o", tmp_path, "--onset-threshold", "3", "--quiet")
    assert r.returncode != 0 and "onset_threshold" in r.stderr and "Traceback" not in r.stderr


def test_failed_write_leaves_nothing(tmp_path, reference_dir, sept):
    from timbreamt.runtime.outputs import output_paths, write_outputs

    result = sept.transcribe(reference_dir / "three_mix.wav", instruments=2)
    target = tmp_path / "ro"
    target.mkdir()
    (target / "three_mix.json").mkdir()        # a folder where the JSON should go: the rename fails
    with pytest.raises(OutputError):
        write_outputs(result, output_paths("three_mix.wav", target, ["midi", "json"]), overwrite=True)
    leftovers = [p.name for p in target.iterdir() if p.name.endswith(".part")]
    assert leftovers == []


def test_browser_job_with_cropped_windows_decodes_the_same():
    """The worker's Python half: cropped windows (maps starting crop_start frames later) give the
    very transcription of whole windows."""
    from timbreamt.core.browser_job import BrowserJob

    rng = np.random.default_rng(7)
    n_samples = 44100 * 12
    total = n_frames(n_samples)
    onset = (rng.random((84, total)) ** 8 * 0.4).astype(np.float32)
    frame = (rng.random((84, total)) ** 6 * 0.25).astype(np.float32)
    emb = rng.standard_normal((12, 84, total)).astype(np.float32)
    for i in range(40):
        p, s = int(rng.integers(10, 70)), int(rng.integers(0, total - 60))
        frame[p, s:s + 30] = 0.9
        onset[p, s] = 0.95
        emb[:, p, s:s + 30] += np.eye(12, dtype=np.float32)[i % 2][:, None] * 3
    emb /= np.linalg.norm(emb, axis=0, keepdims=True)
    results = []
    for can_crop in (False, True):
        job = BrowserJob(n_samples, "synthetic", True, 2, 44100, onset_threshold=0.5, frame_threshold=0.3, min_note_frames=6,
                         core_frames=200, context_frames=80,
                         can_crop=can_crop)
        rows = job.window_list()
        assert any(r[4] > 0 for r in rows) == can_crop
        for i, (in_start, in_end, _, _, c0, c1) in enumerate(rows):
            a = in_start // 512 + c0
            b = in_start // 512 + n_frames(in_end - in_start) - c1
            job.add(i, b - a, onset[:, a:b].tobytes(), frame[:, a:b].tobytes(), emb[:, :, a:b].tobytes())
        results.append(job.finish())
    assert results[0] == results[1] and '"notes": [{' in results[0]
