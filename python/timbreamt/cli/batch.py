"""Command batch: a whole collection (folder, glob or manifest) on Ray, locally or on a cluster."""
from __future__ import annotations

import argparse
import sys

from .transcribe import _formats, _instruments


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt     # SIGTERM stops like Ctrl-C: Ray is shut down, the results manifest is whole


def _cmd_batch(args: argparse.Namespace) -> int:
    import signal

    from ..tools.batch import run_batch
    from ..tools.batch_inputs import AUDIO_EXTENSIONS, discover

    extensions = tuple(e.strip() for e in args.ext.split(",") if e.strip()) if args.ext else AUDIO_EXTENSIONS
    jobs = discover(args.input, extensions)
    defaults = {"model": args.model, "instruments": args.instruments, "onset_threshold": args.onset_threshold,
                "frame_threshold": args.frame_threshold, "min_note_ms": args.min_note_ms,
                "melodia": None if args.melodia is None else args.melodia == "on"}
    signal.signal(signal.SIGTERM, _interrupt)
    summary = run_batch(jobs, args.output, args.format, defaults, workers=args.workers, threads=args.threads,
                        address=args.address, overwrite=args.overwrite, results=args.results, retries=args.retries,
                        in_flight=args.in_flight, progress=not args.quiet)
    rate = summary.done / summary.wall_seconds if summary.wall_seconds else 0.0
    print(f"{summary.total} files: {summary.done} done, {summary.skipped} skipped (already done), "
          f"{summary.failed} failed; {summary.audio_seconds / 3600:.3f} h of audio in {summary.wall_seconds:.1f} s "
          f"({rate:.2f} files/s, {summary.workers} workers) -> {summary.results}")
    if summary.failed:
        print(f"timbreamt: {summary.failed} file(s) failed; their errors are in {summary.results}", file=sys.stderr)
        return 2
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the batch command to the CLI."""
    s = sub.add_parser("batch", help="transcribe a collection (folder, glob or manifest) on Ray, resumable",
                       description="Transcribe every file of a folder (recursive), a glob or a manifest "
                                   "(.csv with a 'path' header, or .jsonl) on a pool of Ray workers, locally or "
                                   "on a cluster (--address). Outputs mirror the input folders under -o; a "
                                   "results manifest (JSON Lines) records each file as it finishes; a re-run "
                                   "skips files already done.")
    s.add_argument("input", help="a folder, a glob pattern (quote it), a manifest (.csv/.jsonl) or one file")
    s.add_argument("-o", "--output", required=True, help="output folder (the input's folder structure is mirrored)")
    s.add_argument("--model", default="septimbre", help="basicamt, septimbre, or a path to an .onnx graph "
                                                        "(a manifest's 'model' column overrides it per file)")
    s.add_argument("--instruments", type=_instruments, default="auto",
                   help="number of instruments or 'auto' (a manifest's 'instruments' column overrides it)")
    s.add_argument("--onset-threshold", type=float, default=None)
    s.add_argument("--frame-threshold", type=float, default=None)
    s.add_argument("--min-note-ms", type=float, default=None)
    s.add_argument("--melodia", choices=("on", "off"), default=None)
    s.add_argument("--format", type=_formats, default=["midi", "json"], help="comma-separated: midi,json,csv")
    s.add_argument("--ext", default=None, help="extensions a folder or glob picks up (default: the audio "
                                               "formats libsndfile reads), comma-separated")
    s.add_argument("--results", default=None, help="results manifest (default: OUTPUT/results.jsonl)")
    s.add_argument("--overwrite", action="store_true", help="redo every file and replace existing outputs")
    s.add_argument("--address", default=None, help="an existing Ray cluster ('auto', HOST:PORT or ray://...); "
                                                   "default: start Ray in this process")
    s.add_argument("--workers", type=int, default=None, help="worker processes (default: the cluster's CPUs / --threads)")
    s.add_argument("--threads", type=int, default=1, help="onnxruntime threads (and Ray CPUs) per worker")
    s.add_argument("--in-flight", type=int, default=2, help="files queued per worker (bounds memory)")
    s.add_argument("--retries", type=int, default=2, help="retries of a file whose worker died")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_batch)
