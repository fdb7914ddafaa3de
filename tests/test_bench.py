"""The benchmark harness runs (no speed figure is asserted: machines are shared and noisy)."""
import soundfile as sf

from conftest import REFERENCE, REFERENCE_MODELS
from timbreamt.tools.bench import make_input, paired_ratio, run_one, table, uncompiled_sources


def test_make_input_and_one_run_each(tmp_path, shipped_models):
    wav = make_input(7.0, tmp_path / "b.wav", REFERENCE)
    info = sf.info(str(wav))
    assert info.samplerate == 44100 and info.channels == 1 and abs(info.duration - 7.0) < 1e-3
    rows = []
    for system in ("timbreamt-septimbre", "reference-basicamt", "basic-pitch"):
        rec = run_one(system, wav, 1, shipped_models, REFERENCE_MODELS)
        assert rec["seconds"] > 0 and rec["peak_rss_mib"] > 10 and rec["notes"] >= 0
        assert 0 < rec["startup"] < rec["seconds"]       # imports + model load, before any audio
        rows.append({**rec, "system": system, "audio_seconds": 7.0, "rtf": rec["seconds"] / 7.0})
    md = table(rows)
    assert md.count("\n") == len(rows) + 1 and "| basic-pitch | " in md
    assert "| 1.00 |" in md.splitlines()[-1]     # basic-pitch against itself


def test_bench_repeats_report_the_median(tmp_path, shipped_models):
    from timbreamt.tools.bench import bench

    order = []
    rows = bench([3.0], ["timbreamt-basicamt", "basic-pitch"], threads=1, models=shipped_models,
                 reference=REFERENCE_MODELS, source=REFERENCE, repeats=3, log=order.append)
    assert [r["system"] for r in rows] == ["timbreamt-basicamt", "basic-pitch"]
    # the systems' order rotates between repeats
    assert [line.split()[0] for line in order] == ["timbreamt-basicamt", "basic-pitch", "basic-pitch",
                                                   "timbreamt-basicamt", "timbreamt-basicamt", "basic-pitch"]
    for r in rows:
        assert r["runs"] == 3 and r["rtf_min"] <= r["rtf"] <= r["rtf_max"]
        assert 0 < r["startup_s"] < r["rtf_max"] * 3.0
    assert "(3 runs)" in table(rows)
    assert f"| {rows[0]['startup_s']:.2f} |" in table(rows).splitlines()[2]
    # paired ratios: each repeat's time over basic-pitch's in the same repeat
    ours, peer = rows
    assert peer["paired_ratios"] == [1.0, 1.0, 1.0] and len(ours["paired_ratios"]) == 3
    assert min(ours["paired_ratios"]) <= ours["rtf_max"] / peer["rtf_min"]
    assert max(ours["paired_ratios"]) >= ours["rtf_min"] / peer["rtf_max"]
    assert f"| {paired_ratio(ours['paired_ratios'])} |" in table(rows).splitlines()[2]


def test_paired_ratio_is_the_median_and_quartiles():
    assert paired_ratio([0.5, 0.4, 0.6, 0.45, 0.55]) == "0.50 (0.45-0.55)"
    assert paired_ratio([0.48]) == "0.48"
    assert paired_ratio([]) == "-"
    # without basic-pitch in the run there is no paired ratio
    row = {"system": "timbreamt-basicamt", "audio_seconds": 30.0, "rtf": 0.01, "peak_rss_mib": 100.0}
    assert "| 0.0100 | - | - |" in table([row])


def test_bench_cli_rejects_zero_repeats():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "timbreamt", "bench", "--repeat", "0", "--durations", "1"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "repeats must be >= 1, got 0" in out.stderr and "Traceback" not in out.stderr


def test_info_prints_parameter_counts():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "timbreamt", "info"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "basicamt: 19,017 parameters" in out.stdout and "septimbre: 44,999 parameters" in out.stdout
    assert "(conv2 rank 8" in out.stdout
    assert "12,809 with a rank-8 conv2 (11,401 time first)," in out.stdout and "(37,383 time first)" in out.stdout
    assert ", 0 = full, time-first;" in out.stdout        # the shipped graphs' conv2 order, from their metadata
    assert "8,713 with 3 x 3 kernels too" in out.stdout and "; conv1 kernel 5 x 5, neck " in out.stdout
    assert "14,297 with a rank-8 conv2 and an 84-row neck" in out.stdout and "neck rows " in out.stdout


def test_uncompiled_sources_lists_modules_without_current_bytecode(tmp_path):
    """Modules with no byte-compiled file, or one older than the source, are listed; compiling clears them."""
    import compileall
    import os

    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    assert uncompiled_sources(tmp_path) == ["a.py", "b.py"]
    assert compileall.compile_dir(str(tmp_path), quiet=1)
    assert uncompiled_sources(tmp_path) == []
    later = (tmp_path / "b.py").stat().st_mtime + 10
    os.utime(tmp_path / "b.py", (later, later))        # edited after it was compiled
    assert uncompiled_sources(tmp_path) == ["b.py"]
