"""Commands of the runtime: transcribe (files -> MIDI/JSON/CSV) and info."""
from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..core import constants as C


def _cmd_info(args: argparse.Namespace) -> int:
    print(f"timbreamt {__version__}")
    print(f"analysis rate {C.SAMPLE_RATE} Hz, hop {C.HOP} ({C.FRAMES_PER_SECOND:.2f} frames/s), "
          f"CQT {C.N_BINS} bins from {C.FMIN} Hz, pitches MIDI {C.MIDI_MIN}-{C.MIDI_MAX}")
    try:
        from ..training.models import build_model, count_parameters
    except ImportError:
        print("models: torch is not installed (pip install 'timbreamt[train]') - parameter counts unavailable")
    else:
        for name in ("basicamt", "septimbre"):
            print(f"{name}: {count_parameters(build_model(name)):,} parameters with the paper's note branch, "
                  f"{count_parameters(build_model(name, conv2_rank=8)):,} with a rank-8 conv2 "
                  f"({count_parameters(build_model(name, conv2_rank=8, conv2_time_first=True)):,} time first), "
                  f"{count_parameters(build_model(name, conv2_rank=8, conv_kernel=3)):,} with 3 x 3 kernels too, "
                  f"{count_parameters(build_model(name, conv2_rank=8, neck_bins=C.N_PITCHES)):,} with a rank-8 conv2 "
                  f"and an 84-row neck")
    from ..core.graph_metadata import read_metadata
    from ..runtime.model import default_model_path

    for name in ("basicamt", "septimbre"):
        path = default_model_path(name)
        meta = read_metadata(path.read_bytes()) if path.is_file() else {}
        rank, kernel = meta.get("conv2_rank", "0" if meta else "?"), meta.get("conv_kernel", "5" if meta else "?")
        neck_kernel = meta.get("neck_kernel", kernel)
        neck = meta.get("neck_bins", str(C.STACKED_BINS) if meta else "?")
        order = meta.get("conv2_order", "freq-first" if meta else "?")
        print(f"shipped model {name}: {path} (conv2 rank {rank}, 0 = full, {order}; conv1 kernel "
              f"{kernel} x {kernel}, neck {neck_kernel} x {neck_kernel}; neck rows {neck})")
    return 0


def _instruments(value: str):
    """'auto' or a whole number; its range (1..MAX_INSTRUMENTS) is checked with the other options
    (core/contract.py), the same check as the API's and the page's."""
    if value.strip().lower() == "auto":
        return "auto"
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'auto', got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'auto', got {value!r}")
    return n


def _formats(value: str) -> list[str]:
    from ..runtime.outputs import FORMATS

    out = [f.strip() for f in value.split(",") if f.strip()]
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"unknown format(s) {', '.join(bad) or value!r}; choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(out))


def _result_line(r, mode: str) -> str:
    rtf = r.seconds / r.duration if r.duration else 0.0
    return (f"{r.path}: {r.duration:.1f} s, {r.n_notes} notes in {r.n_tracks} track(s){mode} "
            f"-> {', '.join(r.written)} [{r.seconds:.2f} s, RTF {rtf:.3f}]")


def _cmd_transcribe(args: argparse.Namespace) -> int:
    import contextlib
    import time

    from . import emit
    from ..core.contract import check_options, resolve_instruments
    from ..core.errors import OutputError
    from ..runtime.jobs import run_batch, threads_per_job
    from ..runtime.outputs import check_writable, plan_outputs, prepare_folder
    from ..runtime.transcriber import Transcriber

    t_start = time.perf_counter()
    # every option against its bounds, before the model loads or any audio is read
    check_options(args.onset_threshold, args.frame_threshold, args.min_note_ms, args.instruments,
                  args.threads, args.jobs)
    jobs = min(args.jobs, len(args.audio))
    threads = args.threads or (2 if jobs <= 1 else threads_per_job(jobs))
    transcriber = Transcriber(args.model, threads=threads)   # a bad model stops everything: exit now
    # a model without a timbre embedding cannot give N tracks: an error, as in the API and the page
    instruments = resolve_instruments(args.instruments, transcriber.model.has_embedding, transcriber.model.name)
    options = dict(instruments=instruments, onset_threshold=args.onset_threshold, frame_threshold=args.frame_threshold,
                   min_note_ms=args.min_note_ms, melodia=None if args.melodia is None else args.melodia == "on")
    transcriber.options(args.onset_threshold, args.frame_threshold, args.min_note_ms, options["melodia"])

    plan, notes = plan_outputs(args.audio, args.output or ".", args.format)
    for note in notes:
        emit(f"timbreamt: note: {note}", err=True)
    failures = []
    tasks = []
    for path, paths in plan:          # outputs that exist or cannot be named: refused before any work
        try:
            check_writable(paths, args.overwrite)
            tasks.append((path, paths))
        except OutputError as exc:
            failures.append(str(exc))
            emit(f"timbreamt: error: {exc}", err=True)
    for folder in sorted({p.parent for _, paths in tasks for p in paths.values()}):
        prepare_folder(folder)        # a read-only or missing-permission folder: stop before the work

    mode = f" ({args.instruments})" if args.instruments == "auto" and instruments else ""
    totals = {"ok": 0, "failed": len(failures), "audio": 0.0}

    def report(r) -> None:
        if r.ok:
            totals["ok"] += 1
            totals["audio"] += r.duration
            for w in r.warnings:
                emit(f"timbreamt: warning: {r.path}: {w}", err=True)
            emit(_result_line(r, mode))
        else:
            totals["failed"] += 1
            emit(f"timbreamt: error: {r.error}", err=True)

    @contextlib.contextmanager
    def progress_bar(path):
        from tqdm import tqdm

        with tqdm(total=100, desc=str(path)[-40:], unit="%", leave=False,
                  disable=args.quiet or not sys.stderr.isatty(), bar_format="{desc} {bar} {n:.0f}%") as bar:
            yield lambda fraction: bar.update(fraction * 100 - bar.n)

    if jobs > 1:
        del transcriber               # loaded to check the model and its options; each worker loads its own
        transcriber = None
    run_batch(tasks, args.model, options, overwrite=args.overwrite, jobs=jobs, threads=threads, on_result=report,
              transcriber=transcriber, progress_for=progress_bar)
    n = totals["ok"] + totals["failed"]
    if n > 1:
        wall = time.perf_counter() - t_start
        emit(f"timbreamt: {n} files: {totals['ok']} ok, {totals['failed']} failed; {totals['audio']:.1f} s of audio "
             f"in {wall:.1f} s ({jobs} job(s) x {threads} thread(s))")
    return 2 if totals["failed"] else 0


def _count(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {value!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the CLI."""
    s = sub.add_parser("info", help="versions, constants, parameter counts")
    s.set_defaults(func=_cmd_info)

    s = sub.add_parser("transcribe", help="audio files -> MIDI/JSON/CSV, one track per instrument")
    s.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3, ...); pipes and /dev/stdin stream "
                   "wav, ogg and mp3")
    s.add_argument("-o", "--output", default=None,
                   help="output folder (default: current folder); inputs sharing a name keep their folders under it")
    s.add_argument("--model", default="septimbre", help="basicamt, septimbre, or a path to an .onnx graph")
    s.add_argument("--instruments", type=_instruments, default="auto",
                   help=f"number of instruments (1 to {C.MAX_INSTRUMENTS}) or 'auto' (needs septimbre for more than 1)")
    s.add_argument("--onset-threshold", type=float, default=None, help="probability in (0, 1); default: the model's")
    s.add_argument("--frame-threshold", type=float, default=None, help="probability in (0, 1); default: the model's")
    s.add_argument("--min-note-ms", type=float, default=None,
                   help=f"shortest note in ms, in (0, {C.MAX_NOTE_MS:g}]; default: the model's")
    s.add_argument("--melodia", choices=("on", "off"), default=None,
                   help="add notes from frame activity without an onset (default: the model's calibrated choice)")
    s.add_argument("--format", type=_formats, default=["midi", "json"], help="comma-separated: midi,json,csv")
    s.add_argument("--overwrite", action="store_true", help="replace existing output files")
    s.add_argument("--jobs", type=_count, default=1,
                   help="worker processes, each loading the model once (default 1: in this process)")
    s.add_argument("--threads", type=_count, default=None,
                   help="onnxruntime threads per job (default: 2 for one job, else CPUs // jobs)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_transcribe)
