"""Command line: argument parsing and printing only; the work lives in the stage modules."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .core import constants as C
from .core.errors import TimbreamtError


def _cmd_info(args: argparse.Namespace) -> int:
    print(f"timbreamt {__import__('timbreamt').__version__}")
    print(f"analysis rate {C.SAMPLE_RATE} Hz, hop {C.HOP} ({C.FRAMES_PER_SECOND:.2f} frames/s), "
          f"CQT {C.N_BINS} bins from {C.FMIN} Hz, pitches MIDI {C.MIDI_MIN}-{C.MIDI_MAX}")
    try:
        from .training.models import build_model, count_parameters
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
    from .core.graph_metadata import read_metadata
    from .runtime.model import default_model_path

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


def _cmd_data(args: argparse.Namespace) -> int:
    from .training.data import generate, list_midi_files

    programs = tuple(int(p) for p in args.programs.split(",")) if args.programs else None
    kwargs: dict = {"programs": programs} if programs else {}
    if args.midi:
        if not 0 < args.midi_fraction <= 1:
            print(f"timbreamt: error: --midi-fraction must be in (0, 1], got {args.midi_fraction}", file=sys.stderr)
            return 2
        kwargs.update(midi_files=tuple(list_midi_files(args.midi)), midi_fraction=args.midi_fraction)
    paths = generate(args.out, args.hours, seed=args.seed, split=args.split, workers=args.workers,
                     progress=not args.quiet, **kwargs)
    print(f"{len(paths)} clips ({len(paths) * 10 / 3600:.2f} h) in {args.out}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .training.models import build_model
    from .training.train import TrainConfig, train

    cfg = TrainConfig(model=args.model, epochs=args.epochs, steps_per_epoch=args.steps, batch_size=args.batch,
                      segment_seconds=args.segment, lr=args.lr, seed=args.seed, init_from=args.init_from or "",
                      threads=args.threads, dynamic_mix=args.dynamic_mix, val_clips=args.val_clips,
                      conv2_rank=args.conv2_rank, conv_kernel=args.conv_kernel, neck_bins=args.neck_bins,
                      conv2_time_first=args.conv2_time_first, teacher=args.teacher or "", distill=args.distill,
                      neck_kernel=args.neck_kernel or 0)
    try:      # the note branch's shape options, checked before any data is read
        build_model(cfg.model, **cfg.note_shape())
    except ValueError as exc:
        print(f"timbreamt: error: {exc}", file=sys.stderr)
        return 2
    record = train(args.data, args.out, cfg, val_dir=args.val, resume=args.resume, progress=not args.quiet)
    print(f"done: {record}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .training.export import export_run

    decoding = None
    if args.val:
        from .training.train import calibrate_run

        decoding = calibrate_run(args.run, [v for v in args.val.split(",") if v], max_clips=args.val_clips,
                                 notes_from=args.notes_from)
        print(f"calibrated on {args.val}: onset {decoding['onset_threshold']}, frame {decoding['frame_threshold']}, "
              f"melodia {'on' if decoding['melodia'] else 'off'} (validation note F1 {decoding['note_f1']:.3f})")
    for path in export_run(args.run, args.out, name=args.name, decoding=decoding, notes_from=args.notes_from):
        print(f"wrote {path} (all export checks passed)")
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
    from .runtime.outputs import FORMATS

    out = [f.strip() for f in value.split(",") if f.strip()]
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"unknown format(s) {', '.join(bad) or value!r}; choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(out))


def _cmd_transcribe(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from .core.errors import TimbreamtError
    from .runtime.outputs import check_writable, output_paths, write_outputs
    from .runtime.transcriber import Transcriber

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


def _cmd_bundle(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .tools.bundle import bundle

    examples = [Path(p) for p in args.example]
    sizes = bundle(args.out, examples)
    mb = {k: v / 1e6 for k, v in sizes.items()}
    print(f"bundle in {args.out}: {mb['total']:.1f} MB (pyodide + numpy {mb.get('pyodide', 0):.1f} MB, "
          f"onnxruntime-web {mb.get('ort', 0):.1f} MB, models {mb.get('models', 0):.2f} MB, "
          f"our wheel {mb.get('wheels', 0) * 1000:.0f} KB)")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .tools.bundle import serve

    serve(args.dir, args.port, isolate=not args.no_isolation)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .tools.bench import SYSTEMS, bench, table, uncompiled_sources

    if args.web:
        from .tools.bench import bench_web

        bench_web(float(args.durations.split(",")[0]) if args.durations else 300.0)
        return 0
    systems = args.systems.split(",") if args.systems else list(SYSTEMS)
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        print(f"timbreamt: error: unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}", file=sys.stderr)
        return 2
    durations = [float(d) for d in (args.durations or "30,300,1800").split(",")]
    try:
        rows = bench(durations, systems, threads=args.threads, repeats=args.repeat)
    except ValueError as exc:      # bench validates its arguments before any work
        print(f"timbreamt: error: {exc}", file=sys.stderr)
        return 2
    print()
    print(f"{args.threads} threads, each pipeline in its own process, file in -> notes out")
    stale = uncompiled_sources()
    if stale:
        print(f"note: {len(stale)} of the package's modules are not byte-compiled ({', '.join(stale[:3])}...): every "
              f"process compiles them (~15 ms a run); `make setup` compiles them")
    print(table(rows))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import json
    import time

    from .training.data import generate_eval_set
    from .tools.evaluate import eval_chart, eval_markdown, evaluate_references, evaluate_set, markdown, summarise, target_checks, targets_markdown

    if args.threads < 1 or args.workers < 1:
        print("timbreamt: error: --threads and --workers must be >= 1", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    clips = generate_eval_set(args.set, workers=args.workers, limit=args.clips, progress=not args.quiet)
    rendered = time.time() - t0
    rows = evaluate_set(clips, threads=args.threads, progress=not args.quiet)
    summary = summarise(rows)
    checks = target_checks(summary)
    text = [f"# Held-out evaluation: {len(clips)} clips of 30 s", "",
            "Unheard music (music21 validation split + procedural parts of a separate seed), GM programs held "
            "out from training (solo piano: program 0, unheard music), both training soundfonts. "
            "mir_eval, onset tolerance 50 ms; means over clips.", "", eval_markdown(summary)]
    if checks:
        text += ["", "Targets:", "", targets_markdown(checks)]
    if not args.skip_references:
        text += ["", "## Shared reference examples (../shared/data/reference)", "", markdown(evaluate_references())]
    minutes = (time.time() - t0) / 60
    text += ["", f"Rendering {rendered / 60:.1f} min (cached afterwards), whole run {minutes:.1f} min, "
             f"{args.threads} threads. Command: `timbreamt eval" + (f" --clips {args.clips}" if args.clips else "") + "`"]
    report = "\n".join(text) + "\n"
    (out / "eval.md").write_text(report)
    (out / "eval.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    eval_chart(summary, out / "eval.png")
    print(report)
    print(f"eval: wrote {out / 'eval.md'}, {out / 'eval.json'} and {out / 'eval.png'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="timbreamt", description="Timbre-agnostic multi-instrument transcription")
    sub = p.add_subparsers(dest="command", required=True)

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

    s = sub.add_parser("bundle", help="assemble the static web bundle")
    s.add_argument("out")
    s.add_argument("--example", action="append", default=[], help="audio file to ship as the page's example")
    s.set_defaults(func=_cmd_bundle)

    s = sub.add_parser("serve", help="serve a bundle on 127.0.0.1 (COOP/COEP headers for threads)")
    s.add_argument("dir", nargs="?", default="build/web")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--no-isolation", action="store_true", help="omit COOP/COEP (single-threaded ORT)")
    s.set_defaults(func=_cmd_serve)

    s = sub.add_parser("bench", help="real-time factor and peak memory vs peers (same run)")
    s.add_argument("--durations", default=None,
                   help="comma-separated seconds of audio (default 30,300,1800; with --web: 300)")
    s.add_argument("--systems", default="", help="comma-separated subset of the systems")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--repeat", type=int, default=1, help="runs per system and duration (median reported; the "
                   "order of systems rotates between runs)")
    s.add_argument("--web", action="store_true", help="time the page in Chromium instead (default 300 s of audio)")
    s.set_defaults(func=_cmd_bench)

    s = sub.add_parser("eval", help="every system on the held-out evaluation set (and the shared examples)")
    s.add_argument("--set", default=".cache/evalset", help="folder of the rendered evaluation set (a cache)")
    s.add_argument("--out", default="eval-output", help="folder for eval.md, eval.json, eval.png")
    s.add_argument("--clips", type=int, default=None, help="only the first N clips of each category")
    s.add_argument("--workers", type=int, default=2, help="rendering processes")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--skip-references", action="store_true", help="skip the shared reference examples")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_eval)

    s = sub.add_parser("data", help="synthesise a training/validation data set with fluidsynth")
    s.add_argument("--hours", type=float, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--split", choices=("train", "val"), default="train",
                   help="which music21 split to draw pieces from (val pieces are never trained on)")
    s.add_argument("--programs", default="", help="comma-separated GM programs (default: the training set)")
    s.add_argument("--midi", default=None, help="folder of your own .mid files to render too")
    s.add_argument("--midi-fraction", type=float, default=0.5, help="share of clips scored from --midi files")
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_data)

    s = sub.add_parser("train", help="train basicamt or septimbre (resumable)")
    s.add_argument("model", choices=("basicamt", "septimbre"))
    s.add_argument("--data", required=True)
    s.add_argument("--val", default=None, help="validation clips folder (note F1, or the encoder's assignment "
                   "accuracy, each epoch: the best epoch is kept as best.pt)")
    s.add_argument("--val-clips", type=int, default=24, help="how many validation clips to use")
    s.add_argument("--out", required=True, help="run folder (checkpoints, log)")
    s.add_argument("--epochs", type=int, default=30)
    s.add_argument("--steps", type=int, default=100, help="steps per epoch")
    s.add_argument("--batch", type=int, default=8)
    s.add_argument("--segment", type=float, default=5.0, help="seconds per training example")
    s.add_argument("--lr", type=float, default=1e-3)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--init-from", default=None, help="septimbre: trained BasicAMT run or checkpoint (frozen note "
                   "branch); basicamt: a run or checkpoint to fine-tune (a full conv2 is factorised to --conv2-rank)")
    s.add_argument("--conv2-rank", type=int, default=0,
                   help="basicamt: note branch conv2 as a rank-R product (0: the paper's full convolution)")
    s.add_argument("--conv-kernel", type=int, default=5, choices=(3, 5),
                   help="basicamt: kernel side of the note branch's conv1 and neck (5: the paper's; a 5 x 5 "
                   "--init-from starts a 3 x 3 branch from its central taps)")
    s.add_argument("--neck-kernel", type=int, default=None, choices=(3, 5),
                   help="basicamt: kernel side of the neck alone (default: --conv-kernel)")
    s.add_argument("--conv2-time-first", action="store_true",
                   help="basicamt: a low-rank conv2's time convolution first (its 25-tap convolution then reads "
                   "--conv2-rank channels, not 16; an --init-from conv2 is re-factorised by SVD)")
    s.add_argument("--neck-bins", type=int, default=C.STACKED_BINS, choices=C.NECK_BINS,
                   help="basicamt: rows of the note branch after conv2 (252: the paper's, three per semitone; "
                   "84: one per pitch, ~20%% faster windows, less accurate; a 252-row --init-from is folded to pitches)")
    s.add_argument("--teacher", default=None, help="basicamt: a trained BasicAMT run or checkpoint whose onset "
                   "and frame probabilities the model also learns to match (distillation)")
    s.add_argument("--distill", type=float, default=1.0,
                   help="weight of the distillation loss against the label loss (with --teacher)")
    s.add_argument("--dynamic-mix", type=float, default=0.0,
                   help="septimbre: share of examples mixed on the fly from solo clips (0-1)")
    s.add_argument("--resume", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("export", help="export a run to float32-safe ONNX (with checks)")
    s.add_argument("run", help="run folder or checkpoint")
    s.add_argument("--out", default="export/models")
    s.add_argument("--name", default=None, help="file stem (default: the model name)")
    s.add_argument("--val", default=None, help="validation clips folder(s), comma-separated: calibrate the "
                   "decoding (thresholds, melodia) on them")
    s.add_argument("--val-clips", type=int, default=36, help="how many validation clips to calibrate on")
    s.add_argument("--notes-from", default=None, help="septimbre: take the note branch from this basicamt run")
    s.set_defaults(func=_cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except TimbreamtError as exc:
        print(f"timbreamt: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("timbreamt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
