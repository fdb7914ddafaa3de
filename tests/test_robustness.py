"""Hostile inputs, generated at test time, for every class of failure of issue 17: each must give a
correct result (with a warning where something was lost) or a one-line error with a non-zero exit,
and the other files of a batch must still complete. Plus property-based tests (hypothesis) of the
readers and decoders. Short audio and the note-only model keep it fast."""
from __future__ import annotations

import inspect
import json
import os
import stat
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, event, given, settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import timbreamt
from conftest import tone
from timbreamt.core import notes
from timbreamt.core.constants import MAX_JOBS, MAX_THREADS
from timbreamt.core.contract import check_options
from timbreamt.core.errors import AudioError, ModelError, OptionError, OutputError, TimbreamtError
from timbreamt.core.constants import MAX_INSTRUMENTS, N_PITCHES
from timbreamt.runtime import transcriber as transcriber_module
from timbreamt.runtime.audio import AudioStream
from timbreamt.runtime.outputs import clean_stale_temps, output_paths, plan_outputs, write_outputs
from timbreamt.runtime.transcriber import MAX_PREALLOCATED_FRAMES, Transcriber

SR = 44100
SECONDS = 2.0
# modest and reproducible: no example database written into the checkout; more examples with
# TIMBREAMT_HYPOTHESIS_EXAMPLES=400 when hunting
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "timbreamt-hypothesis"))   # its caches: not in the checkout
HYPOTHESIS = settings(max_examples=int(os.environ.get("TIMBREAMT_HYPOTHESIS_EXAMPLES", 30)), deadline=None,
                      database=None, derandomize=True,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def basic(shipped_models):
    return Transcriber(shipped_models / "basicamt.onnx")


def melody(seconds: float = SECONDS) -> np.ndarray:
    out = np.zeros(int(seconds * SR), np.float32)
    for i, p in enumerate((60, 64, 67, 72)):
        seg = tone(p, seconds / 4, SR)
        out[int(i * SR * seconds / 4):][:len(seg)] += seg
    return out


def write(path: Path, data: np.ndarray, **kw) -> Path:
    sf.write(os.fsencode(path), data, SR, **kw)   # bytes: names that are not UTF-8 too
    return path


def flac_with_length(path: Path, total: int) -> Path:
    """A valid FLAC whose STREAMINFO says ``total`` samples (0: unknown, as streaming encoders write)."""
    data = bytearray((write(path.with_suffix(".src.flac"), melody())).read_bytes())
    assert data[:4] == b"fLaC"
    packed = int.from_bytes(data[18:26], "big")
    data[18:26] = ((packed & ~((1 << 36) - 1)) | total).to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


def mp3_with_frames(path: Path, frames: int) -> Path:
    """An MP3 whose Xing header announces ``frames`` MPEG frames."""
    data = bytearray(write(path.with_suffix(".src.mp3"), melody(), format="MP3").read_bytes())
    at = data.find(b"Xing") if b"Xing" in data else data.find(b"Info")
    assert at > 0 and int.from_bytes(data[at + 4:at + 8], "big") & 1     # the frame count is present
    data[at + 8:at + 12] = frames.to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path


def streamed_wav(path: Path) -> Path:
    """A WAV as a streaming tool leaves it: RIFF and data sizes 0 (never written back)."""
    data = bytearray(write(path.with_suffix(".src.wav"), melody(), subtype="PCM_16").read_bytes())
    i = data.index(b"data")
    data[4:8] = data[i + 4:i + 8] = b"\0\0\0\0"
    path.write_bytes(bytes(data))
    return path


def truncated(path: Path, fmt: str) -> Path:
    src = write(path.with_suffix(f".src.{fmt}"), melody(), format=fmt.upper())
    data = src.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


# ------------------------------------------------------------------------ reading: headers never size memory
@pytest.fixture
def spy_hint(monkeypatch):
    """The frame-map size the transcriber asks the accumulator for."""
    seen = []
    real = transcriber_module.MapAccumulator

    def spy(*args, **kw):
        seen.append(kw.get("expected_frames"))
        return real(*args, **kw)
    monkeypatch.setattr(transcriber_module, "MapAccumulator", spy)
    return seen


@pytest.mark.parametrize("make, lies", [
    (lambda p: flac_with_length(p / "nolength.flac", 0), False),
    (lambda p: flac_with_length(p / "billions.flac", (1 << 36) - 1), True),
    (lambda p: mp3_with_frames(p / "billions.mp3", 0x7FFFFFFF), True),
    (lambda p: streamed_wav(p / "streamed.wav"), False),
], ids=["flac-no-length", "flac-claims-billions", "mp3-claims-billions", "wav-data-size-0"])
def test_headers_never_size_memory(basic, tmp_path, spy_hint, make, lies):
    result = basic.transcribe(make(tmp_path))
    assert result.duration == pytest.approx(SECONDS, abs=0.06)
    assert {60, 64, 67} <= {n.pitch for n in result.tracks[0].notes}
    assert spy_hint[0] <= MAX_PREALLOCATED_FRAMES
    truncation = [w for w in result.warnings if "header announces" in w]
    assert bool(truncation) == lies, result.warnings
    if lies:
        assert f"ends after {result.duration:.2f} s" in truncation[0]


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3"])
def test_truncated_file_warns_with_the_duration_read(basic, tmp_path, fmt):
    result = basic.transcribe(truncated(tmp_path / f"cut.{fmt}", fmt))
    assert 0.5 < result.duration < SECONDS * 0.75
    assert any(f"{result.duration:.2f} s" in w and ("truncated" in w or "decoding stopped" in w)
               for w in result.warnings), result.warnings
    assert result.n_notes >= 1


def test_reader_block_is_bounded_by_samples_not_by_header_channels(tmp_path):
    path = write(tmp_path / "many.wav", np.zeros((1000, 64), np.float32), subtype="FLOAT")
    stream = AudioStream(path, SR)
    assert stream.block * stream.channels <= (1 << 22)
    assert sum(len(b) for b in stream) == 1000 and stream.samples_read == 1000


def _feed_fifo(path: Path, data: bytes) -> threading.Thread:
    def feed():
        with open(path, "wb") as f:
            f.write(data)
    t = threading.Thread(target=feed, daemon=True)
    t.start()
    return t


def test_pipes_and_proc_files(basic, tmp_path):
    wav = write(tmp_path / "m.wav", melody(), subtype="PCM_16").read_bytes()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    feeder = _feed_fifo(fifo, wav)
    result = basic.transcribe(fifo)
    feeder.join(5)
    assert result.duration == pytest.approx(SECONDS, abs=0.01) and result.n_notes >= 3
    # FLAC cannot be decoded from a pipe by libsndfile: a clear error, not "empty file"
    flac = write(tmp_path / "m.flac", melody()).read_bytes()
    feeder = _feed_fifo(fifo, flac)
    with pytest.raises(AudioError, match="streamed from a pipe.*save it first"):
        basic.transcribe(fifo)
    feeder.join(5)
    with pytest.raises(AudioError, match="not a readable audio file") as e:
        basic.transcribe("/proc/self/status")      # 0 bytes by stat, text inside
    assert "empty" not in str(e.value)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty file"):
        basic.transcribe(empty)
    leader, follower = os.openpty()           # /dev/stdin on a terminal would wait for typed audio
    try:
        with pytest.raises(AudioError, match="is a terminal"):
            basic.transcribe(os.ttyname(follower))
    finally:
        os.close(leader)
        os.close(follower)
    with pytest.raises(OptionError, match="sr is for arrays"):
        basic.transcribe(fifo, sr=SR)


def test_cancelling_channels_warn(basic, tmp_path):
    x = melody()
    stereo = np.stack([x, -x], axis=1)
    for result in (basic.transcribe(write(tmp_path / "phase.wav", stereo, subtype="FLOAT")),
                   basic.transcribe(stereo, sr=SR)):
        assert result.n_notes == 0
        assert any("cancel in the mono mix" in w for w in result.warnings), result.warnings
    ok = basic.transcribe(np.stack([x, 0.5 * x], axis=1), sr=SR)
    assert ok.n_notes >= 3 and not any("cancel" in w for w in ok.warnings)


def test_channels_first_arrays_are_refused_not_misread(basic):
    x = melody()
    twenty = np.repeat(x[None, :], 20, axis=0)                 # (20, samples)
    with pytest.raises(AudioError, match=r"\(20, 88200\) looks like \(channels, samples\).*\.T"):
        basic.transcribe(twenty, sr=SR)
    right = basic.transcribe(twenty.T, sr=SR)
    assert [n.pitch for n in right.tracks[0].notes] == [n.pitch for n in basic.transcribe(x, sr=SR).tracks[0].notes]


# ------------------------------------------------------------------------ options: one check everywhere
@pytest.mark.parametrize("kw, words", [
    (dict(instruments=100_000_000), f"from 1 to {MAX_INSTRUMENTS}"),
    (dict(instruments=0), "instruments"),
    (dict(instruments="many"), "instruments"),
    (dict(min_note_ms=float("inf")), "min_note_ms"),
    (dict(min_note_ms=float("nan")), "min_note_ms"),
    (dict(min_note_ms=-5), "min_note_ms"),
    (dict(onset_threshold=1.5), "onset_threshold"),
    (dict(frame_threshold=float("nan")), "frame_threshold"),
    (dict(threads=0), f"threads must be a whole number from 1 to {MAX_THREADS}"),
    (dict(jobs=MAX_JOBS + 1), "jobs"),
])
def test_option_bounds(kw, words):
    with pytest.raises(OptionError, match=words) as e:
        check_options(**kw)
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)


def test_api_checks_options_and_model_combinations(basic):
    x = melody(0.5)
    with pytest.raises(OptionError, match="instruments"):
        basic.transcribe(x, sr=SR, instruments=100_000_000)
    with pytest.raises(OptionError, match="min_note_ms"):
        basic.transcribe(x, sr=SR, min_note_ms=float("inf"))
    with pytest.raises(ModelError, match="timbre embedding"):
        basic.transcribe(x, sr=SR, instruments=3)
    with pytest.raises(OptionError, match="threads"):
        Transcriber("basicamt", threads=0)


def run_cli(*args, cwd=None, **kw):
    return subprocess.run([sys.executable, "-m", "timbreamt", *map(os.fsdecode, args)], capture_output=True,
                          cwd=cwd, **kw)


def one_error_line(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("timbreamt: error: ") and "Traceback" not in lines[0], lines
    return lines[0]


@pytest.mark.parametrize("args, words", [
    (["--model", "basicamt", "--instruments", "3"], "cannot separate 3 instruments"),
    (["--instruments", "100000000"], "instruments must be a whole number from 1 to"),
    (["--min-note-ms", "inf"], "min_note_ms"),
    (["--min-note-ms", "nan"], "min_note_ms"),
    (["--min-note-ms", "-5"], "min_note_ms"),
    (["--frame-threshold", "1"], "frame_threshold"),
    (["--threads", "0"], "threads"),
    (["--jobs", "0"], "jobs"),
])
def test_cli_options_fail_in_one_line_before_any_work(tmp_path, args, words):
    audio = write(tmp_path / "a.wav", melody(0.5))
    r = run_cli("transcribe", audio, "-o", tmp_path / "out", *args)
    assert r.returncode != 0 and words in one_error_line(r.stderr)
    assert not (tmp_path / "out").exists() and r.stdout == b""


# ------------------------------------------------------------------------ outputs
def test_same_stems_keep_their_folders_and_nothing_is_overwritten(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        write(tmp_path / d / "x.wav", melody(0.6 if d == "a" else 1.2))
    out = tmp_path / "out"
    args = ("transcribe", "a/x.wav", "b/x.wav", "a/x.wav", "-o", out, "--model", "basicamt", "--quiet")
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    da = json.loads((out / "a" / "x.json").read_text())["duration"]
    db = json.loads((out / "b" / "x.json").read_text())["duration"]
    assert (da, db) == (pytest.approx(0.6, abs=0.01), pytest.approx(1.2, abs=0.01))
    err = r.stderr.decode()
    assert "share the name 'x'" in err and "given more than once" in err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == \
        ["a/x.json", "a/x.mid", "b/x.json", "b/x.mid"]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    r = run_cli(*args, cwd=tmp_path)          # again without --overwrite: refused, untouched
    assert r.returncode != 0 and r.stderr.decode().count("exists") == 2
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    plan, _ = plan_outputs([tmp_path / "a" / "x.wav", tmp_path / "a" / "x.flac"], out, ["midi"])
    assert [paths["midi"].name for _, paths in plan] == ["x.wav.mid", "x.flac.mid"]


def test_outputs_are_a_set_with_umask_modes(basic, tmp_path, monkeypatch):
    from timbreamt.runtime import outputs

    result = basic.transcribe(melody(0.5), sr=SR)
    target = tmp_path / "o"
    target.mkdir()
    (target / "x.json").mkdir()                  # refused before anything is written
    with pytest.raises(OutputError, match="is a folder"):
        write_outputs(result, output_paths("x.wav", target, ["midi", "json"]), overwrite=True)
    assert sorted(p.name for p in target.iterdir()) == ["x.json"]
    # the disk fills after the MIDI is in place: the MIDI is removed again, no temporary file is left
    real_link = os.link

    def full_disk(src, dst, *a, **kw):
        if str(dst).endswith(".csv"):
            raise OSError(28, "No space left on device")
        return real_link(src, dst, *a, **kw)
    monkeypatch.setattr(outputs.os, "link", full_disk)
    with pytest.raises(OutputError, match="z.csv: No space left"):
        write_outputs(result, output_paths("z.wav", target, ["midi", "csv"]))
    monkeypatch.undo()
    assert sorted(p.name for p in target.iterdir()) == ["x.json"]
    old = os.umask(0o027)
    try:
        written = write_outputs(result, output_paths("y.wav", target, ["midi", "csv"]))
    finally:
        os.umask(old)
    assert [stat.S_IMODE(p.stat().st_mode) for p in written] == [0o640, 0o640]
    assert (target / "y.csv").read_text().splitlines()[0] == "track,pitch,start_s,end_s,velocity"


def test_stale_temporary_files_are_cleaned(basic, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".x.mid.{dead.pid}.0123abcd.part"
    live = tmp_path / f".x.mid.{os.getpid()}.89abcdef.part"
    stale.write_bytes(b"half")
    live.write_bytes(b"being written")
    write_outputs(basic.transcribe(melody(0.5), sr=SR), output_paths("x.wav", tmp_path, ["midi"]))
    assert not stale.exists() and live.exists() and (tmp_path / "x.mid").is_file()
    assert clean_stale_temps(tmp_path) == []


def test_long_and_non_utf8_names_and_unwritable_folders(tmp_path):
    long_ok = write(tmp_path / ("a" * 246 + ".wav"), melody(0.5))           # 250 bytes: x.json is 251
    too_long = write(tmp_path / ("b" * 251 + ".wav"), melody(0.5))          # its .json would be 256
    raw = write(Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.wav")), melody(0.5))
    out = tmp_path / "out"
    r = run_cli("transcribe", long_ok, too_long, raw, "-o", out, "--model", "basicamt", "--quiet")
    assert r.returncode != 0
    assert "256 bytes, the file system allows 255" in one_error_line(r.stderr)
    names = sorted(os.listdir(os.fsencode(out)))
    assert names == sorted([b"a" * 246 + b".json", b"a" * 246 + b".mid", b"caf\xe9.json", b"caf\xe9.mid"])
    assert b"caf\xe9.wav: " in r.stdout                           # printed back as the same bytes
    # a folder that cannot be written is reported before any transcription
    unwritable = Path("/sys/kernel/timbreamt-out") if os.geteuid() == 0 else tmp_path / "ro" / "out"
    if os.geteuid() != 0:
        (tmp_path / "ro").mkdir(mode=0o555)
    r = run_cli("transcribe", long_ok, "-o", unwritable, "--model", "basicamt")
    assert r.returncode != 0 and "cannot write into" in one_error_line(r.stderr) and r.stdout == b""


# ------------------------------------------------------------------------ the process around it
@pytest.fixture
def three(tmp_path):
    return [write(tmp_path / f"{n}.wav", melody(0.5 + i * 0.25)) for i, n in enumerate("pqr")]


def test_stdout_closed_early_finishes_the_batch_without_traceback(tmp_path, three):
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "timbreamt", "transcribe", *map(str, three), "-o", str(out),
                          "--model", "basicamt"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()                           # `| head -0`: the reader is gone before the first line
    err = p.stderr.read()
    assert p.wait() == 0 and b"Traceback" not in err and b"Broken" not in err, err
    assert sorted(x.name for x in out.iterdir()) == sorted(f"{n}.{e}" for n in "pqr" for e in ("mid", "json"))


def test_stdout_on_a_full_disk_is_one_error_line(tmp_path, three):
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "timbreamt", "transcribe", str(three[0]), "-o", str(tmp_path / "o"),
                            "--model", "basicamt"], stdout=full, stderr=subprocess.PIPE)
    assert r.returncode != 0 and "No space left on device" in one_error_line(r.stderr)
    assert (tmp_path / "o" / "p.mid").is_file()
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "timbreamt", "--version"], stdout=full, stderr=subprocess.PIPE)
    assert r.returncode != 0 and "standard output" in one_error_line(r.stderr)


def test_hostile_batch_other_files_complete(tmp_path, three):
    """Every reader class in one CLI batch, /dev/stdin fed a WAV through a pipe: each file has its
    outputs or one error line naming it; nothing stops the others."""
    hostile = {
        "nolength.flac": flac_with_length(tmp_path / "nolength.flac", 0),
        "billions.flac": flac_with_length(tmp_path / "billions.flac", (1 << 36) - 1),
        "billions.mp3": mp3_with_frames(tmp_path / "billions.mp3", 0x7FFFFFFF),
        "streamed.wav": streamed_wav(tmp_path / "streamed.wav"),
        "cut.wav": truncated(tmp_path / "cut.wav", "wav"),
    }
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\xff\xff\xff\xffWAVEfmt " + os.urandom(200))
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    inputs = [three[0], junk, *hostile.values(), empty, "/dev/stdin", three[1]]
    out = tmp_path / "out"
    wav = (tmp_path / "src.wav")
    write(wav, melody(), subtype="PCM_16")
    r = run_cli("transcribe", *inputs, "-o", out, "--model", "basicamt", "--quiet", input=wav.read_bytes())
    err = r.stderr.decode()
    assert r.returncode == 2 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("timbreamt: error:")]
    assert len(errors) == 2 and any("junk.wav" in e for e in errors) and any("empty.flac" in e for e in errors)
    written = {p.name for p in out.iterdir()}
    # the two "billions" share a stem in one folder: their outputs keep the whole input name
    for name in ["p", "q", "stdin", "nolength", "billions.flac", "billions.mp3", "streamed", "cut"]:
        assert {f"{name}.mid", f"{name}.json"} <= written, (name, sorted(written))
    assert "cut.wav: the file ends after" in err
    assert json.loads((out / "stdin.json").read_text())["duration"] == pytest.approx(SECONDS, abs=0.01)
    assert "10 files: 8 ok, 2 failed" in r.stdout.decode()


# ------------------------------------------------------------------------ the API and result bridges
def test_api_twice_in_one_process_and_its_signature():
    import timbreamt.runtime.transcriber  # noqa: F401  (the submodule import that used to shadow it)

    x = melody(0.5)
    a = timbreamt.transcribe(x, sr=SR, model="basicamt", instruments=None)
    b = timbreamt.transcribe(x, sr=SR, model="basicamt", instruments=None)
    assert a.to_dict() == b.to_dict() and a.n_notes >= 1
    params = inspect.signature(timbreamt.transcribe).parameters
    assert list(params)[:3] == ["audio", "sr", "model"] and "instruments" in params and "min_note_ms" in params
    assert "instruments" in (timbreamt.transcribe.__doc__ or "")


def test_result_bridges(basic, tmp_path):
    result = basic.transcribe(melody(), sr=SR)
    path = tmp_path / "r.mid"
    result.to_midi(path)
    mid = mido.MidiFile(str(path))
    assert sorted(m.note for t in mid.tracks for m in t if m.type == "note_on") == \
        sorted(n.pitch for n in result.tracks[0].notes)
    ((intervals, hz),) = result.to_mir_eval()
    assert intervals.shape == (result.n_notes, 2) and hz.shape == (result.n_notes,)
    assert (intervals[:, 1] > intervals[:, 0]).all() and (np.diff(intervals[:, 0]) >= 0).all()
    c4 = [h for h, n in zip(hz, sorted(result.tracks[0].notes, key=lambda n: (n.start, n.pitch))) if n.pitch == 60]
    assert c4 and c4[0] == pytest.approx(261.6256, abs=1e-3)
    try:
        import pretty_midi  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install pretty_midi"):
            result.to_pretty_midi()
    else:
        pm = result.to_pretty_midi()
        assert sum(len(i.notes) for i in pm.instruments) == result.n_notes


# ------------------------------------------------------------------------ --jobs
def test_jobs_match_one_job_and_isolate_a_crashing_file(tmp_path, three):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"no audio here")
    files = [*three, bad]
    r1 = run_cli("transcribe", *files, "-o", tmp_path / "one", "--model", "basicamt", "--format", "midi,json,csv")
    r2 = run_cli("transcribe", *files, "-o", tmp_path / "two", "--model", "basicamt", "--format", "midi,json,csv",
                 "--jobs", "2")
    assert r1.returncode == r2.returncode == 2 and b"Traceback" not in r2.stderr
    one = {p.name: p.read_bytes() for p in (tmp_path / "one").iterdir()}
    two = {p.name: p.read_bytes() for p in (tmp_path / "two").iterdir()}
    assert len(one) == 9 and one == two
    from timbreamt.runtime.jobs import threads_per_job

    assert b"4 files: 3 ok, 1 failed" in r2.stdout
    assert f"2 job(s) x {threads_per_job(2)} thread(s)".encode() in r2.stdout
    env = {**os.environ, "TIMBREAMT_TEST_CRASH_ON": "q.wav"}
    r = run_cli("transcribe", *three, "-o", tmp_path / "crash", "--model", "basicamt", "--jobs", "2", env=env)
    assert r.returncode == 2 and b"q.wav: the worker process died (signal 6)" in r.stderr
    assert sorted(p.name for p in (tmp_path / "crash").iterdir()) == ["p.json", "p.mid", "r.json", "r.mid"]


# ------------------------------------------------------------------------ property-based
def _wav_header(rate: int, channels: int, bits: int, data_size: int) -> bytes:
    block = (channels * bits // 8) & 0xFFFF         # a header may hold any value: wrap, as a writer's bug would
    return (b"RIFF" + struct.pack("<I", min(36 + data_size, 0xFFFFFFFF)) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate,
            (rate * block) & 0xFFFFFFFF, block, bits) + b"data" + struct.pack("<I", data_size))


def _transcribe_or_clear_error(basic, path: Path) -> None:
    try:
        result = basic.transcribe(path)
    except TimbreamtError as exc:
        assert str(exc) and "\n" not in str(exc)
        event(f"refused: {type(exc).__name__}")
        return
    event("transcribed")
    assert np.isfinite(result.duration) and result.duration > 0
    for n in result.tracks[0].notes:
        assert 0 <= n.start < n.end <= result.duration + 0.05


@HYPOTHESIS
@given(body=st.binary(max_size=64) | st.binary(min_size=200, max_size=3000), prefix=st.sampled_from(["", "wav", "wav", "wav", "flac", "riff-junk"]),
       rate=st.sampled_from([8000, 22050, 44100, 48000]) | st.integers(0, 2_000_000),
       channels=st.integers(1, 4) | st.integers(1, 4) | st.integers(0, 65535), bits=st.sampled_from([8, 16, 24, 32]),
       size=st.sampled_from([0, 1, 100, 2000, 0xFFFFFFFF]))
def test_arbitrary_bytes_as_audio_files(basic, tmp_path, body, prefix, rate, channels, bits, size):
    head = {"": b"", "wav": _wav_header(rate, channels, bits, size),
            "flac": b"fLaC\x00\x00\x00\x22", "riff-junk": b"RIFF\x00\x00\x00\x00WAVE"}[prefix]
    suffix = ".flac" if prefix == "flac" else ".wav"
    path = tmp_path / f"h{suffix}"
    path.write_bytes(head + body)
    _transcribe_or_clear_error(basic, path)


@HYPOTHESIS
@given(audio=hnp.arrays(dtype=np.int16,
                        shape=st.one_of(st.tuples(st.integers(0, 6000)),
                                        st.tuples(st.integers(0, 3000), st.integers(1, 4)),
                                        st.tuples(st.integers(1, 4), st.integers(0, 3000)),
                                        st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3))),
                        elements=st.integers(-100, 100)),
       dtype=st.sampled_from([np.float32, np.float64, np.int16, np.int32, np.uint8, np.float16]),
       scale=st.sampled_from([0.01, 1.0, 1.0, 1e9, np.nan, np.inf]),
       sr=st.one_of(st.sampled_from([8000, 44100, 48000]), st.integers(-10, 1_000_000), st.floats(allow_nan=True),
                    st.just(True)))
def test_arbitrary_arrays_and_rates(basic, audio, sr, dtype, scale):
    with np.errstate(all="ignore"):       # uint8 wraps the negative values, float16 overflows: any array
        audio = (audio * scale / 100).astype(dtype) if np.dtype(dtype).kind == "f" else audio.astype(dtype)
    try:
        result = basic.transcribe(audio, sr=sr)
    except (AudioError, OptionError) as exc:
        assert str(exc) and "\n" not in str(exc)
        event("refused")
        return
    event("transcribed")
    samples = audio.shape[0]
    assert audio.ndim in (1, 2) and result.duration == pytest.approx(samples / sr, abs=2 / SR + 1e-3)


@HYPOTHESIS
@given(seed=st.integers(0, 2**32 - 1), rows=st.sampled_from([N_PITCHES, N_PITCHES, N_PITCHES, 12]),
       frames=st.integers(0, 300), sharpness=st.floats(1, 12), poison=st.sampled_from([None, None, np.nan, -0.5, 1.5]),
       onset=st.floats(0.01, 0.99), frame=st.floats(0.01, 0.99), min_frames=st.integers(1, 20),
       melodia=st.booleans())
def test_decode_notes_on_arbitrary_maps(seed, rows, frames, sharpness, poison, onset, frame, min_frames, melodia):
    rng = np.random.default_rng(seed)
    onset_map = (rng.random((rows, frames)) ** sharpness).astype(np.float32)
    frame_map = np.maximum(onset_map, rng.random((rows, frames)) ** (sharpness / 3)).astype(np.float32)
    if poison is not None and frames:
        frame_map[rng.integers(rows), rng.integers(frames)] = poison
    maps = np.stack([onset_map, frame_map])
    try:
        ev = notes.decode_notes(onset_map, frame_map, onset, frame, min_frames, melodia=melodia)
    except ValueError as exc:
        assert "\n" not in str(exc) and (rows != N_PITCHES or not np.isfinite(maps).all())
        event("refused")
        return
    assert rows == N_PITCHES and np.isfinite(maps).all()
    event(f"decoded {'some' if len(ev) else 'no'} notes")
    assert ((ev["end"] - ev["start"]) >= min_frames).all() and (ev["end"] <= frames).all()
    assert ((ev["pitch"] >= notes.MIDI_MIN) & (ev["pitch"] < notes.MIDI_MIN + N_PITCHES)).all()
    assert np.isfinite(ev["amplitude"]).all()
    assert (np.diff(ev["start"]) >= 0).all()
