"""timbreamt batch: input discovery and resume planning (fast, no Ray), then whole batches on a local Ray
instance and on a `ray start --head` cluster (slow): bad files recorded without stopping the others, a
SIGKILL in the middle then a resume (nothing done twice, nothing lost), worker deaths retried, and notes
identical to `timbreamt transcribe` (the Transcriber) for every file."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REFERENCE

from timbreamt.tools.batch_inputs import BatchError, Job, check_collisions, discover, output_paths_for

pytest.importorskip("ray")
BIN = Path(sys.executable).parent
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
os.environ.setdefault("RAY_AUTH_MODE", "disabled")      # the in-process runs below: no token under ~/.ray


def write_collection(root: Path, n_good: int = 18, seconds: float = 2.5) -> tuple[list[Path], list[Path]]:
    """``n_good`` short clips cut at different offsets of the reference recordings (44.1 kHz stereo,
    some resampled to 16 kHz, some mono, some FLAC) in nested folders, and two bad files: a corrupt one
    and an empty one."""
    import soundfile as sf
    import soxr

    sources = [sf.read(str(p), dtype="float32", always_2d=True) for p in sorted(REFERENCE.glob("*.wav"))]
    folders = ["", "a", "a/b", "c"]
    good = []
    for k in range(n_good):
        data, sr = sources[k % len(sources)]
        start = (k * 7919) % max(1, len(data) - int(seconds * sr))
        clip = data[start:start + int(seconds * sr)]
        if k % 3 == 1:
            clip, sr = soxr.resample(clip, sr, 16000), 16000
        if k % 4 == 2:
            clip = clip.mean(axis=1)
        ext = ".flac" if k % 5 == 3 else ".wav"
        path = root / folders[k % len(folders)] / f"clip{k:02d}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), clip, sr)
        good.append(path)
    bad = [root / "a" / "corrupt.wav", root / "c" / "empty.flac"]
    bad[0].write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio" * 20)
    bad[1].write_bytes(b"")
    return good, bad


def results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def batch_cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "timbreamt"), "batch", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=240, **kw)


# ------------------------------------------------------------------------------------------------
# fast: what a batch runs, without Ray

def test_discover_folder_glob_manifest_and_mirroring(tmp_path):
    for rel in ("x.wav", "sub/y.FLAC", "sub/deeper/z.mp3", "sub/notes.txt", ".hidden/h.wav", "sub/.h.wav"):
        (tmp_path / "in" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / rel).write_bytes(b"x")
    jobs = discover(tmp_path / "in")
    assert [str(j.rel) for j in jobs] == ["x.wav", "sub/y.FLAC", "sub/deeper/z.mp3"]
    assert [str(j.rel) for j in discover(tmp_path / "in", ("wav",))] == ["x.wav"]
    out = output_paths_for(jobs[2], tmp_path / "out", ["midi", "json", "csv"])
    assert out == {"midi": tmp_path / "out/sub/deeper/z.mid", "json": tmp_path / "out/sub/deeper/z.json",
                   "csv": tmp_path / "out/sub/deeper/z.csv"}
    # a glob mirrors from its fixed prefix
    jobs = discover(f"{tmp_path}/in/sub/**/*.*")
    assert sorted(str(j.rel) for j in jobs) == ["deeper/z.mp3", "y.FLAC"]
    # a manifest: relative paths from its folder, per-file options checked and kept
    (tmp_path / "in" / "list.csv").write_text("path,instruments,model,melodia\nx.wav,3,,\nsub/y.FLAC,auto,basicamt,off\n")
    jobs = discover(tmp_path / "in" / "list.csv")
    assert [(str(j.rel), dict(j.options)) for j in jobs] == [
        ("x.wav", {"instruments": 3}), ("sub/y.FLAC", {"instruments": "auto", "model": "basicamt", "melodia": False})]
    (tmp_path / "in" / "list.jsonl").write_text('{"path": "sub/deeper/z.mp3", "onset_threshold": 0.4}\n\n'
                                                f'{{"path": "{tmp_path}/in/x.wav"}}\n')
    jobs = discover(tmp_path / "in" / "list.jsonl")
    assert [(str(j.rel), dict(j.options)) for j in jobs] == [("sub/deeper/z.mp3", {"onset_threshold": 0.4}),
                                                            ("x.wav", {})]


@pytest.mark.parametrize("text, message", [
    ("path,instrument\nx.wav,2\n", "list.csv:2: unknown column(s) instrument"),
    ("path,instruments\nx.wav,0\n", "list.csv:2: instruments must be 'auto' or a whole number from 1 to"),
    ("path,onset_threshold\nx.wav,high\n", "list.csv:2: onset_threshold must be a number, got 'high'"),
    ("path,melodia\nx.wav,maybe\n", "list.csv:2: melodia must be on/off"),
    ("file\nx.wav\n", "list.csv: a CSV manifest needs a header row with a 'path' column"),
    ("path\n", "list.csv: the manifest lists no files"),
])
def test_bad_manifests_are_one_line_errors(tmp_path, text, message):
    (tmp_path / "list.csv").write_text(text)
    with pytest.raises(BatchError) as err:
        discover(tmp_path / "list.csv")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_nothing_to_do_and_colliding_outputs_are_refused(tmp_path):
    with pytest.raises(BatchError, match="no such file, folder or manifest"):
        discover(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BatchError, match="no audio files"):
        discover(tmp_path / "empty")
    with pytest.raises(BatchError, match="matches no audio files"):
        discover(f"{tmp_path}/empty/*.wav")
    for name in ("song.wav", "song.flac"):
        (tmp_path / "in" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_bytes(b"x")
    jobs = discover(tmp_path / "in")
    with pytest.raises(BatchError, match="would both write .*song.mid"):
        check_collisions(jobs, tmp_path / "out", ["midi"])


def test_results_manifest_torn_line_and_resume_plan(tmp_path):
    from timbreamt.tools.batch import fingerprint, plan, read_results

    log = tmp_path / "out" / "results.jsonl"
    log.parent.mkdir()
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"x" * 10)
    st = audio.stat()
    opts = {"model": "m", "instruments": "auto", "onset_threshold": None, "frame_threshold": None,
            "min_note_ms": None, "melodia": None}
    done = {"path": str(audio), "status": "done", "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "fingerprint": fingerprint(opts, "sha"), "outputs": ["a.mid"]}
    log.write_text(json.dumps(done) + "\n" + '{"path": "/x", "stat')     # killed in the middle of a write
    records = read_results(log)
    assert records == [done] and log.read_text().endswith("}\n")            # the torn tail is cut off
    job = Job(audio, Path("a.wav"))
    args = (tmp_path / "out", ["midi"], {"model": "m"}, {"m": "sha"})
    # outputs missing: run it again (they are ours to write)
    assert [len(x) if isinstance(x, list) else x for x in plan([job], *args, records, False)] == [1, 0, 0]
    (tmp_path / "out" / "a.mid").write_bytes(b"MThd")
    assert [len(x) if isinstance(x, list) else x for x in plan([job], *args, records, False)] == [0, 0, 1]
    assert len(plan([job], *args, records, True)[0]) == 1                   # --overwrite redoes it
    other = {"m": "other graph"}                                             # a changed model: redo
    assert len(plan([job], *args[:3], other, records, False)[0]) == 1
    os.utime(audio, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))             # a changed input: redo
    assert len(plan([job], *args, records, False)[0]) == 1
    # an output nobody recorded is not replaced without --overwrite
    todo, refused, skipped = plan([job], *args, [], False)
    assert not todo and not skipped and "a.mid exists (use --overwrite to replace it)" in refused[0][1]


def test_outputs_recorded_but_not_yet_moved_are_moved_by_the_rerun(tmp_path):
    """The done record is the commit point: a batch killed after it but before the renames leaves the
    outputs staged, and the next run moves them into place (and drops staged files nobody recorded)."""
    from timbreamt.tools.batch import STAGING_NAME, recover_staged, staged_path

    out = tmp_path / "out"
    staging = out / STAGING_NAME
    staging.mkdir(parents=True)
    recorded = [out / "sub" / "a.mid", out / "sub" / "a.json"]
    for o in recorded:
        staged_path(staging, o).write_bytes(o.name.encode())
    (out / "b.mid").write_bytes(b"already in place")
    staged_path(staging, out / "b.mid").write_bytes(b"older staged copy")
    unrecorded = staged_path(staging, out / "c.mid")
    unrecorded.write_bytes(b"never recorded")
    records = [{"path": "/in/a.wav", "status": "done", "outputs": ["sub/a.mid", "sub/a.json"]},
               {"path": "/in/b.wav", "status": "done", "outputs": ["b.mid"]},
               {"path": "/in/c.wav", "status": "failed", "outputs": []}]
    assert recover_staged(records, out, staging) == 2
    assert [o.read_bytes() for o in recorded] == [b"a.mid", b"a.json"]
    assert (out / "b.mid").read_bytes() == b"already in place"            # an output in place is never replaced
    assert not (out / "c.mid").exists() and unrecorded.is_file()         # left for the run to clear
    assert recover_staged(records, out, staging) == 0                     # idempotent


def test_cli_module_does_not_import_ray():
    code = "import sys, timbreamt.cli as c; c.build_parser(); print('ray' in sys.modules, 'onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------------------------------------
# slow: real batches on Ray

@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("collection") / "in"
    good, bad = write_collection(root)
    return root, good, bad


def expected_notes(paths: list[Path], model: str = "septimbre", instruments="auto") -> dict[Path, dict]:
    """What `timbreamt transcribe` gives for each file (its Transcriber, same options)."""
    from timbreamt.runtime.transcriber import Transcriber

    t = Transcriber(model, threads=1)
    return {p: t.transcribe(p, instruments=instruments if t.model.has_embedding else None).to_dict() for p in paths}


@pytest.mark.slow
def test_batch_folder_bad_files_identical_notes_and_rerun_skips(collection, tmp_path):
    root, good, bad = collection
    out = tmp_path / "out"
    r = batch_cli(root, "-o", out, "--workers", 2, "--format", "midi,json,csv")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    assert "20 files: 18 done, 0 skipped (already done), 2 failed" in r.stdout
    recs = results(out)
    assert len(recs) == 20
    by_path = {Path(rec["path"]): rec for rec in recs}
    assert by_path[bad[0]]["status"] == "failed" and "not a readable audio file" in by_path[bad[0]]["error"]
    assert by_path[bad[1]]["status"] == "failed" and "empty file (0 bytes)" in by_path[bad[1]]["error"]
    for b in bad:
        assert "\n" not in by_path[b]["error"] and str(b) in by_path[b]["error"]
        assert f"failed: {by_path[b]['error']}" in r.stderr
    assert len({rec["worker"] for rec in recs}) == 2              # both workers took files
    expected = expected_notes(good)
    for g in good:
        rec = by_path[g]
        rel = g.relative_to(root)
        assert rec["status"] == "done" and rec["error"] is None and rec["rel"] == str(rel)
        produced = json.loads((out / rel.with_suffix(".json")).read_text())
        assert produced == expected[g], g                          # identical notes, tracks and timing
        assert rec["notes"] == sum(len(t["notes"]) for t in produced["tracks"]) and rec["tracks"] == len(produced["tracks"])
        assert rec["duration"] == pytest.approx(produced["duration"], abs=1e-3) and rec["seconds"] > 0
        for suffix in (".mid", ".csv"):
            assert (out / rel.with_suffix(suffix)).stat().st_size > 0
    assert not (out / ".timbreamt-staging").exists()
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.mid")}
    # a re-run skips every file done (nothing transcribed again) and tries the bad ones again
    r = batch_cli(root, "-o", out, "--workers", 2, "--format", "midi,json,csv", "--quiet")
    assert r.returncode == 2 and "20 files: 0 done, 18 skipped (already done), 2 failed" in r.stdout, r.stdout + r.stderr
    assert len(results(out)) == 22 and {Path(x["path"]) for x in results(out)[20:]} == set(bad)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.mid")} == mtimes
    # an output written by someone else is not replaced without --overwrite (and the file is recorded)
    other = tmp_path / "other"
    (other / "a").mkdir(parents=True)
    (other / "a" / "clip01.mid").write_bytes(b"mine")
    r = batch_cli(root / "a" / "clip01.wav", "-o", other / "a", "--quiet")
    assert r.returncode == 2 and (other / "a" / "clip01.mid").read_bytes() == b"mine"
    assert "clip01.mid exists (use --overwrite to replace it)" in results(other / "a")[0]["error"]


@pytest.mark.slow
def test_batch_killed_in_the_middle_resumes_without_redoing_or_losing(tmp_path):
    """SIGKILL the CLI once a few files are recorded, run it again: every file ends up done exactly once."""
    root = tmp_path / "in"
    good, _ = write_collection(root, n_good=14, seconds=12.0)
    for b in (root / "a" / "corrupt.wav", root / "c" / "empty.flac"):
        b.unlink()
    out = tmp_path / "out"
    cmd = [str(BIN / "timbreamt"), "batch", str(root), "-o", str(out), "--workers", "1", "--in-flight", "1", "--quiet"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    log = out / "results.jsonl"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if log.is_file() and log.read_text().count("\n") >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the batch ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        killed_ns = time.time_ns()
        proc.wait()
    finally:
        time.sleep(0.5)
        try:          # Ray's helpers of the killed driver (its session, which this test started)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    before = results(out)
    assert 3 <= len(before) < len(good), len(before)
    done_before = {Path(r["path"]) for r in before}
    # a kill between a record and its renames leaves that file's outputs staged: the re-run moves them
    # into place instead of redoing the file, so every recorded output was written before the kill
    r = batch_cli(root, "-o", out, "--workers", 2, "--quiet")
    assert r.returncode == 0, r.stderr
    assert f"{len(good)} files: {len(good) - len(before)} done, {len(before)} skipped" in r.stdout
    recs = results(out)
    assert sorted(Path(x["path"]) for x in recs) == sorted(good)       # each file once: none twice, none lost
    assert all(x["status"] == "done" for x in recs)
    for p in good:
        assert (out / p.relative_to(root)).with_suffix(".json").is_file()
    assert all((out / p.relative_to(root)).with_suffix(".mid").stat().st_mtime_ns <= killed_ns for p in done_before)


@pytest.mark.slow
def test_worker_killed_mid_batch_is_restarted_and_its_file_retried(collection, tmp_path):
    """SIGKILL a worker process after its first file: Ray restarts it, its queued files are retried, and
    every good file still ends done (in-process run_batch, Ray started here)."""
    from timbreamt.tools.batch import run_batch

    root, good, _ = collection
    killed = []

    def kill_first_worker(rec: dict) -> None:
        if not killed and rec["status"] == "done":
            pid = int(rec["worker"].rsplit(":", 1)[1])
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    jobs = [Job(p, p.relative_to(root)) for p in good[:10]]
    summary = run_batch(jobs, tmp_path / "out", ["json"], {"model": "basicamt"}, workers=2, progress=False,
                        on_record=kill_first_worker)
    assert killed and summary.done == 10 and summary.failed == 0, results(tmp_path / "out")
    workers = {rec["worker"] for rec in results(tmp_path / "out")}
    # the two first workers, and the killed one's restart, which took the files queued for it
    assert len(workers) == 3 and any(w.endswith(f":{killed[0]}") for w in workers), workers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster(tmp_path):
    """A one-node cluster from `ray start --head --block` on a free port, stopped by its own process id."""
    import tempfile

    port = _free_port()
    # its own temp folder: the machine's /tmp/ray (and its "latest cluster" file) is left alone
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    proc = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
                             "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            time.sleep(0.2)
        time.sleep(1.0)
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)         # `ray start --block` stops its node on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # whatever of that node is left (this fixture started it)
        except ProcessLookupError:
            pass
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_batch_on_an_existing_cluster_with_a_manifest(collection, tmp_path, ray_cluster):
    root, good, bad = collection
    manifest = tmp_path / "list.jsonl"
    rows = [{"path": str(good[0]), "instruments": 2}, {"path": str(good[1]), "model": "basicamt"},
            {"path": str(good[2])}, {"path": str(bad[1])}]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    r = batch_cli(manifest, "-o", out, "--address", ray_cluster, "--workers", 2, "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "4 files: 3 done, 0 skipped (already done), 1 failed" in r.stdout
    recs = {Path(x["path"]): x for x in results(out)}
    assert recs[bad[1]]["status"] == "failed" and "empty file (0 bytes)" in recs[bad[1]]["error"]
    # the manifest's per-file options were used, with the same notes as the Transcriber gives
    assert recs[good[0]]["tracks"] == 2 and recs[good[0]]["options"]["instruments"] == 2
    assert recs[good[1]]["options"]["model"] == "basicamt"
    want = {**expected_notes([good[0]], instruments=2), **expected_notes([good[1]], model="basicamt"),
            **expected_notes([good[2]])}
    for g in good[:3]:
        rel = Path(recs[g]["rel"])
        assert json.loads((out / rel.with_suffix(".json")).read_text()) == want[g], g
    # a cluster that is not there: one line, no traceback
    r = batch_cli(manifest, "-o", tmp_path / "none", "--address", f"127.0.0.1:{_free_port()}", "--quiet")
    assert r.returncode == 2 and "cannot reach the Ray cluster at" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
