"""`timbreamt bench`: real-time factor and peak RSS of full pipelines, each in its own process.

Systems: our BasicAMT and Septimbre (with clustering), the reference graphs run through our windowed
runtime, and Spotify's basic-pitch ONNX (its own 2 s windows). All on the same synthetic input (the
reference examples repeated to length), same thread count, same run; ratios against basic-pitch.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..core import constants as C
from .paths import REFERENCE_DIR, REFERENCE_MODELS_DIR, require_dir

SYSTEMS = ("timbreamt-basicamt", "timbreamt-septimbre", "reference-basicamt", "reference-septimbre", "basic-pitch")


def uncompiled_sources(package_dir: Path | None = None) -> list[str]:
    """The package's modules without an up-to-date byte-compiled file. Where bytecode is not written
    at import (PYTHONDONTWRITEBYTECODE, a read-only install) each process compiles them again: ~15 ms
    of a 0.3 s run on 30 s of audio, measured on both pipelines, so the 30 s figures move with it."""
    import importlib.util

    package_dir = package_dir or Path(__file__).resolve().parents[1]
    stale = []
    for source in sorted(package_dir.rglob("*.py")):
        cached = Path(importlib.util.cache_from_source(str(source)))
        if not cached.is_file() or cached.stat().st_mtime < source.stat().st_mtime:
            stale.append(str(source.relative_to(package_dir)))
    return stale


def make_input(seconds: float, path: Path, source_dir: Path) -> Path:
    """A 44.1 kHz mono 16-bit WAV of ``seconds``: the reference examples repeated (written in blocks)."""
    import soundfile as sf

    from ..core.resample import resample

    pieces = []
    for name in ("short_mix", "three_mix", "piano_short"):
        data, sr = sf.read(str(source_dir / f"{name}.wav"), dtype="float32", always_2d=True)
        mono = data.mean(axis=1)
        pieces.append(resample(mono, sr, C.GRAPH_SAMPLE_RATE) if sr != C.GRAPH_SAMPLE_RATE else mono)
    return write_looped(np.concatenate(pieces), seconds, C.GRAPH_SAMPLE_RATE, path)


def write_looped(loop: np.ndarray, seconds: float, sample_rate: int, path: Path) -> Path:
    """A mono 16-bit WAV of ``seconds``: ``loop`` (samples,) repeated, written block by block (long test
    audio without holding it in memory)."""
    import soundfile as sf

    total = int(seconds * sample_rate)
    with sf.SoundFile(str(path), "w", sample_rate, 1, subtype="PCM_16") as f:
        written = 0
        while written < total:
            block = loop[: total - written]
            f.write(block)
            written += len(block)
    return path


def _child(system: str, audio: str, threads: int, models: str, reference: str) -> dict:
    """Runs in a fresh process: the whole pipeline, file in -> notes out. ``startup`` is the part
    spent before any audio is read (imports, loading the model): a fixed cost of every run."""
    t0 = time.perf_counter()
    if system == "basic-pitch":
        from ..runtime.audio import AudioStream
        from .basic_pitch import BasicPitch

        model = BasicPitch(threads)
        startup = time.perf_counter() - t0
        samples = np.concatenate(list(AudioStream(audio, 22050)))
        n = len(model.transcribe(samples))
    else:
        from ..runtime.transcriber import Transcriber

        owner, kind = system.split("-")
        path = Path(models) / f"{kind}.onnx" if owner == "timbreamt" else Path(reference) / f"{kind}_44100.onnx"
        transcriber = Transcriber(path, threads)
        startup = time.perf_counter() - t0
        result = transcriber.transcribe(audio, instruments="auto" if kind == "septimbre" else None)
        n = result.n_notes
    return {"seconds": time.perf_counter() - t0, "startup": startup, "notes": n}


def run_one(system: str, audio: Path, threads: int, models: Path, reference: Path) -> dict:
    code = ("import json,sys; from timbreamt.tools.bench import _child; "
            f"print(json.dumps(_child({system!r}, {str(audio)!r}, {threads}, {str(models)!r}, {str(reference)!r})))")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{system} failed: {err.strip().splitlines()[-1] if err.strip() else status}")
    record = json.loads(out.strip().splitlines()[-1])
    record["peak_rss_mib"] = usage.ru_maxrss / 1024   # Linux reports KiB
    return record


def bench(durations: list[float], systems: list[str], threads: int = 2, models: Path | None = None,
          reference: Path | None = None, source: Path | None = None, repeats: int = 1, log=print) -> list[dict]:
    """Each system on each duration, ``repeats`` times (the order of systems rotates between
    repeats, so slow spells of a shared machine fall on all of them); a row per (duration, system)
    with the median time (``rtf``), the fastest and slowest run, the largest peak RSS and, when
    basic-pitch is among the systems, ``paired_ratios``: each repeat's time over basic-pitch's in
    the same repeat (run next to each other, so a machine whose speed drifts during the bench moves
    both; their quartiles show how far the rounds disagree, which a ratio of medians hides)."""
    from ..runtime.model import models_dir

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    models = models or models_dir()
    reference = require_dir(reference or REFERENCE_MODELS_DIR, "the reference graphs (shared data)")
    source = require_dir(source or REFERENCE_DIR, "the reference examples (shared data)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in durations:
            audio = make_input(seconds, Path(tmp) / f"bench_{int(seconds)}s.wav", source)
            runs: dict[str, list[dict]] = {s: [] for s in systems}
            for rep in range(repeats):
                shift = rep % len(systems)
                for system in systems[shift:] + systems[:shift]:
                    rec = run_one(system, audio, threads, models, reference)
                    runs[system].append(rec)
                    log(f"{system:22s} {seconds:7.0f} s  RTF {rec['seconds'] / seconds:.4f}  peak RSS "
                        f"{rec['peak_rss_mib']:7.1f} MiB  {rec['notes']} notes")
            peer = runs.get("basic-pitch")
            for system in systems:
                times = sorted(r["seconds"] for r in runs[system])
                row = {"system": system, "audio_seconds": seconds, "runs": len(times),
                       "seconds": float(np.median(times)), "rtf": float(np.median(times)) / seconds,
                       "rtf_min": times[0] / seconds, "rtf_max": times[-1] / seconds,
                       "startup_s": float(np.median([r["startup"] for r in runs[system]])),
                       "peak_rss_mib": max(r["peak_rss_mib"] for r in runs[system]),
                       "notes": runs[system][0]["notes"]}
                if peer:
                    row["paired_ratios"] = [r["seconds"] / p["seconds"] for r, p in zip(runs[system], peer)]
                rows.append(row)
    return rows


def paired_ratio(ratios: list[float]) -> str:
    """Per-repeat ratios -> "median (quartiles)", e.g. "0.48 (0.45-0.51)"; "-" without any."""
    if not ratios:
        return "-"
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    return f"{median:.2f} ({q1:.2f}-{q3:.2f})" if len(ratios) > 1 else f"{median:.2f}"


def table(rows: list[dict]) -> str:
    """Markdown table with RTF (median of the runs, and their range), the ratio of medians and the
    paired ratio (median and quartiles of per-repeat ratios) against basic-pitch at the same duration,
    the median start-up seconds (part of the RTF) and memory ratios against basic-pitch."""
    lines = ["| audio | system | RTF (median) | RTF / basic-pitch | paired ratio (quartiles) | RTF range | start-up s | "
             "peak RSS MiB | RSS / basic-pitch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peer = next((p for p in rows if p["system"] == "basic-pitch" and p["audio_seconds"] == r["audio_seconds"]), None)
        ratio = f"{r['rtf'] / peer['rtf']:.2f}" if peer else "-"
        mem = f"{r['peak_rss_mib'] / peer['peak_rss_mib']:.2f}" if peer else "-"
        spread = f"{r.get('rtf_min', r['rtf']):.4f}-{r.get('rtf_max', r['rtf']):.4f} ({r.get('runs', 1)} runs)"
        startup = f"{r['startup_s']:.2f}" if "startup_s" in r else "-"
        lines.append(f"| {r['audio_seconds'] / 60:.1f} min | {r['system']} | {r['rtf']:.4f} | {ratio} | "
                     f"{paired_ratio(r.get('paired_ratios', []))} | {spread} | "
                     f"{startup} | {r['peak_rss_mib']:.0f} | {mem} |")
    return "\n".join(lines)


def bench_web(seconds: float = 300.0, model: str = "septimbre", instruments: str | int = "auto",
              source: Path | None = None, repeats: int = 3, log=print) -> dict:
    """The page against the CLI on the same file, in the same run.

    Page (Chromium through Playwright, COOP/COEP; the model in two inference workers of one ORT thread
    each, see web/worker.js; the record says which engine ran): cold start (page open -> engine
    ready), then the file transcribed the page's way (the WAV streamed from the File); the first run
    includes waiting for the model. CLI: ``timbreamt transcribe`` as a process (wall time, Python start
    and model load included), and the in-process ``Transcriber`` (model loaded, 2 threads). Warm runs
    alternate page, CLI, page, CLI... (``repeats`` pairs) and the ratio is the median of each pair's
    ratio: on a shared machine whose load changes by the minute, a pair run back to back is the fairest
    comparison. Ratios: page first run / CLI process, page warm / CLI warm (paired)."""
    import shutil
    import threading

    from playwright.sync_api import sync_playwright

    from ..runtime.transcriber import Transcriber
    from .bundle import bundle
    from .serve import make_server
    source = require_dir(source or REFERENCE_DIR, "the reference examples (shared data)")
    page_js = """async ([model, instruments]) => {
        const blob = await (await fetch('examples/bench.wav')).blob();
        // responsiveness: the longest gap between 20 ms timer ticks on the page's thread
        let last = performance.now(), maxGap = 0;
        const timer = setInterval(() => { const now = performance.now(); maxGap = Math.max(maxGap, now - last); last = now; }, 20);
        const t1 = performance.now();
        const r = await window.timbreamtPage.transcriber.transcribeFile(blob, { model, instruments });
        clearInterval(timer);
        return { total_ms: performance.now() - t1, timings: r.timings, max_gap_ms: maxGap,
                 threads: r.threads, inference_workers: r.inferenceWorkers,
                 notes: r.transcription.tracks.reduce((n, t) => n + t.notes.length, 0),
                 tracks: r.transcription.tracks.length };
    }"""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "web"
        bundle(out)
        audio = make_input(seconds, out / "examples" / "bench.wav", source)
        server = make_server(out, 0, isolate=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        chromium = shutil.which("chromium") or "/usr/bin/chromium"
        pairs = []
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu",
                                                                            "--disable-background-networking"])
                page = browser.new_page()
                page.set_default_timeout(600_000)
                t0 = time.perf_counter()
                page.goto(url)
                page.wait_for_function("document.body.dataset.ready === 'true'")
                cold = time.perf_counter() - t0
                first = page.evaluate(page_js, [model, instruments])
                cli_process = _cli_process_seconds(audio, model, instruments, Path(tmp) / "cli")
                cli = Transcriber(model, threads=2)
                for _ in range(max(1, repeats)):
                    warm = page.evaluate(page_js, [model, instruments])
                    t1 = time.perf_counter()
                    result = cli.transcribe(str(audio), instruments=instruments)
                    pairs.append((warm, time.perf_counter() - t1, result.n_notes))
                browser.close()
        finally:
            server.shutdown()
    page_warm = [w["total_ms"] / 1000 for w, _, _ in pairs]
    cli_warm = [c for _, c, _ in pairs]
    ratios = sorted(p / c for p, c in zip(page_warm, cli_warm))
    last = pairs[-1][0]
    record = {"audio_seconds": seconds, "model": model, "instruments": instruments, "cold_start_s": cold,
              "page_first_s": first["total_ms"] / 1000, "page_warm_s": page_warm, "cli_warm_s": cli_warm,
              "page_inference_s": last["timings"]["inference"] / 1000,
              "page_postprocess_s": last["timings"]["postprocess"] / 1000,
              "page_reading_s": last["timings"]["reading"] / 1000, "threads": last["threads"],
              # with the model in inference workers, reading and per-window Python overlap the inference:
              # the page waited for the model this long, of page_inference_s
              "page_inference_wait_s": last["timings"].get("waiting", last["timings"]["inference"]) / 1000,
              "page_window_post_s": last["timings"].get("windowPost", 0) / 1000,
              "page_finish_s": last["timings"].get("finish", 0) / 1000,
              "inference_workers": last.get("inference_workers", 0),
              "page_notes": last["notes"], "page_tracks": last["tracks"], "cli_notes": pairs[-1][2],
              "main_thread_max_gap_ms": max([first["max_gap_ms"]] + [w["max_gap_ms"] for w, _, _ in pairs]),
              "cli_process_s": cli_process, "paired_ratios": ratios}
    record["ratio_first_vs_cli_process"] = record["page_first_s"] / cli_process
    record["ratio_warm_vs_cli_warm"] = float(np.median(ratios))
    record["page_rtf"] = float(np.median(page_warm)) / seconds
    log(json.dumps(record, indent=1))
    log(f"page/CLI on the same {seconds:.0f} s file ({model}, instruments {instruments}): first run "
        f"{record['page_first_s']:.2f} s vs `timbreamt transcribe` {cli_process:.2f} s = "
        f"{record['ratio_first_vs_cli_process']:.2f}x; warm, median of {len(ratios)} back-to-back pairs "
        f"{record['ratio_warm_vs_cli_warm']:.2f}x (pairs {', '.join(f'{r:.2f}' for r in ratios)}; page "
        f"{np.median(page_warm):.2f} s, CLI {np.median(cli_warm):.2f} s); cold start {cold:.2f} s")
    return record


def _cli_process_seconds(audio: Path, model: str, instruments, out_dir: Path) -> float:
    """Wall time of the `timbreamt transcribe` command on ``audio`` (Python start and model load included)."""
    cmd = [sys.executable, "-m", "timbreamt", "transcribe", str(audio), "-o", str(out_dir), "--model", model,
           "--instruments", str(instruments), "--quiet", "--threads", "2"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0
