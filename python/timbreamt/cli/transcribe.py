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
    if value == "auto":
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


def _cmd_transcribe(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from ..core.errors import TimbreamtError
    from ..runtime.outputs import check_writable, output_paths, write_outputs
    from ..runtime.transcriber import Transcriber

    transcriber = Transcriber(args.model, threads=args.threads)   # a bad model stops everything: exit now
    instruments = args.instruments if transcriber.model.has_embedding else None
    failures = 0
    for path in args.audio:
        t0 = time.perf_counter()
        try:
            paths = output_paths(path, args.output or ".", args.format)
            check_writable(paths, args.overwrite)
            with tqdm(total=100, desc=str(path)[-40:], unit="%", leave=False,
                      disable=args.quiet or not sys.stderr.isatty(),
                      bar_format="{desc} {bar} {n:.0f}%") as bar:
                def progress(fraction: float) -> None:
                    bar.update(fraction * 100 - bar.n)

                result = transcriber.transcribe(path, instruments=instruments, onset_threshold=args.onset_threshold,
                                                frame_threshold=args.frame_threshold, min_note_ms=args.min_note_ms,
                                                progress=progress,
                                                melodia=None if args.melodia is None else args.melodia == "on")
            written = write_outputs(result, paths, overwrite=args.overwrite)
        except (TimbreamtError, ValueError) as exc:
            failures += 1
            print(f"timbreamt: error: {exc}", file=sys.stderr)
            continue
        for w in result.warnings:
            print(f"timbreamt: warning: {path}: {w}", file=sys.stderr)
        took = time.perf_counter() - t0
        rtf = took / result.duration if result.duration else 0.0
        mode = f" ({args.instruments})" if args.instruments == "auto" and instruments else ""
        print(f"{path}: {result.duration:.1f} s, {result.n_notes} notes in {len(result.tracks)} track(s){mode} "
              f"-> {', '.join(str(w) for w in written)} [{took:.2f} s, RTF {rtf:.3f}]")
    return 2 if failures else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the CLI."""
    s = sub.add_parser("info", help="versions, constants, parameter counts")
    s.set_defaults(func=_cmd_info)

    s = sub.add_parser("transcribe", help="audio files -> MIDI/JSON/CSV, one track per instrument")
    s.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3, ...)")
    s.add_argument("-o", "--output", default=None, help="output folder (default: current folder)")
    s.add_argument("--model", default="septimbre", help="basicamt, septimbre, or a path to an .onnx graph")
    s.add_argument("--instruments", type=_instruments, default="auto", help="number of instruments or 'auto'")
    s.add_argument("--onset-threshold", type=float, default=None)
    s.add_argument("--frame-threshold", type=float, default=None)
    s.add_argument("--min-note-ms", type=float, default=None)
    s.add_argument("--melodia", choices=("on", "off"), default=None,
                   help="add notes from frame activity without an onset (default: the model's calibrated choice)")
    s.add_argument("--format", type=_formats, default=["midi", "json"], help="comma-separated: midi,json,csv")
    s.add_argument("--overwrite", action="store_true", help="replace existing output files")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_transcribe)
