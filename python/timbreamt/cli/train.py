"""Commands of training and evaluation: data, train, export, eval."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core import constants as C


def _cmd_data(args: argparse.Namespace) -> int:
    from ..training.data import generate, list_midi_files

    programs = tuple(int(p) for p in args.programs.split(",")) if args.programs else None
    kwargs: dict = {"programs": programs} if programs else {}
    if args.midi:
        if not 0 < args.midi_fraction <= 1:
            print(f"timbreamt: error: --midi-fraction must be in (0, 1], got {args.midi_fraction}", file=sys.stderr)
            return 2
        kwargs.update(midi_files=tuple(list_midi_files(args.midi)), midi_fraction=args.midi_fraction)
    for name in ("synth_fraction", "room_prob"):
        value = getattr(args, name)
        if not 0 <= value <= 1:
            print(f"timbreamt: error: --{name.replace('_', '-')} must be in [0, 1], got {value}", file=sys.stderr)
            return 2
        if value:
            kwargs[name] = value
    if args.eval_style:
        from ..training.data import EVAL_CLIP_SECONDS, generate_eval_style

        if args.programs or args.midi or args.synth_fraction or args.room_prob:
            print("timbreamt: error: --eval-style renders the evaluation's form with the training programs and "
                  "soundfonts: it takes no --programs, --midi, --synth-fraction or --room-prob", file=sys.stderr)
            return 2
        paths = generate_eval_style(args.out, args.hours, seed=args.seed, split=args.split, workers=args.workers,
                                    progress=not args.quiet, ood=args.ood)
        print(f"{len(paths)} clips of {EVAL_CLIP_SECONDS:g} s ({len(paths) * EVAL_CLIP_SECONDS / 3600:.2f} h) "
              f"in {args.out}")
        return 0
    if args.ood:
        kwargs["ood"] = True
    paths = generate(args.out, args.hours, seed=args.seed, split=args.split, workers=args.workers,
                     progress=not args.quiet, **kwargs)
    print(f"{len(paths)} clips ({len(paths) * 10 / 3600:.2f} h) in {args.out}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from ..training.models import build_model
    from ..training.train import TrainConfig, train

    cfg = TrainConfig(model=args.model, epochs=args.epochs, steps_per_epoch=args.steps, batch_size=args.batch,
                      segment_seconds=args.segment, lr=args.lr, seed=args.seed, init_from=args.init_from or "",
                      threads=args.threads, dynamic_mix=args.dynamic_mix, val_clips=args.val_clips,
                      conv2_rank=args.conv2_rank, conv_kernel=args.conv_kernel, neck_bins=args.neck_bins,
                      conv2_time_first=args.conv2_time_first, teacher=args.teacher or "", distill=args.distill,
                      teacher_maps=args.teacher_maps or "",
                      neck_kernel=args.neck_kernel or 0, augment=args.augment, hard_mix=args.hard_mix,
                      harmonic_labels=args.harmonic_labels, encoder_from=args.encoder_from or "")
    try:      # the note branch's shape options, checked before any data is read
        build_model(cfg.model, **cfg.note_shape())
    except ValueError as exc:
        print(f"timbreamt: error: {exc}", file=sys.stderr)
        return 2
    record = train(args.data, args.out, cfg, val_dir=args.val, resume=args.resume, progress=not args.quiet)
    print(f"done: {record}")
    return 0


def _path_arg(value: str) -> str:
    """A path option that must name something: an empty value (an unset shell variable) is a usage error,
    not the current folder."""
    if not value.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty value")
    return value


def _cmd_teacher_maps(args: argparse.Namespace) -> int:
    from ..core.errors import OptionError
    from ..training.teacher import write_teacher_maps

    if args.threads < 1:
        raise OptionError(f"--threads must be >= 1, got {args.threads}")
    model = args.model or str(_reference_basicamt())
    done = write_teacher_maps(args.data, args.out, model, threads=args.threads, progress=not args.quiet)
    print(f"teacher maps of {done} more clips in {args.out} (from {model})")
    return 0


def _reference_basicamt() -> Path:
    from ..tools.paths import REFERENCE_MODELS_DIR, require_dir

    return require_dir(REFERENCE_MODELS_DIR, "the reference graphs") / "basicamt_44100.onnx"


def _cmd_export(args: argparse.Namespace) -> int:
    from ..training.export import export_run

    decoding = None
    if args.val:
        from ..training.train import calibrate_run

        decoding = calibrate_run(args.run, [v for v in args.val.split(",") if v], max_clips=args.val_clips,
                                 notes_from=args.notes_from)
        print(f"calibrated on {args.val}: onset {decoding['onset_threshold']}, frame {decoding['frame_threshold']}, "
              f"melodia {'on' if decoding['melodia'] else 'off'} (validation note F1 {decoding['note_f1']:.3f})")
    for path in export_run(args.run, args.out, name=args.name, decoding=decoding, notes_from=args.notes_from):
        print(f"wrote {path} (all export checks passed)")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import json
    import time

    from ..training.data import generate_eval_set, read_set_meta
    from ..tools.evaluate import (SPLITS, eval_chart, eval_markdown, evaluate_references, evaluate_set, gap_markdown,
                                  markdown, ood_target_checks, split_summaries, target_checks, targets_markdown)
    from ..training.sources import OOD_SOUNDFONTS, OOD_SYNTH_FAMILIES

    if args.threads < 1 or args.workers < 1:
        print("timbreamt: error: --threads and --workers must be >= 1", file=sys.stderr)
        return 2
    if args.models and not all((Path(args.models) / f"{n}.onnx").is_file() for n in ("basicamt", "septimbre")):
        print(f"timbreamt: error: --models {args.models} must hold basicamt.onnx and septimbre.onnx", file=sys.stderr)
        return 2
    if Path(args.set).resolve() == Path(args.ood_set).resolve():
        print("timbreamt: error: --set and --ood-set must be different folders", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    sets = {SPLITS[0]: generate_eval_set(args.set, workers=args.workers, limit=args.clips, progress=not args.quiet),
            SPLITS[1]: generate_eval_set(args.ood_set, workers=args.workers, limit=args.clips,
                                         progress=not args.quiet, ood=True)}
    rendered = time.time() - t0
    rows = []
    for split, clips in sets.items():
        rows += [{"split": split, **row} for row in evaluate_set(clips, threads=args.threads, progress=not args.quiet,
                                                                 models=Path(args.models) if args.models else None)]
    summaries = split_summaries(rows)
    n = len(sets[SPLITS[0]])
    # the sources the OOD set was rendered with (an earlier split's cache is reused as it is): its meta.json's
    ood_meta = Path(args.ood_set) / "meta.json"
    meta = read_set_meta(ood_meta) if ood_meta.is_file() else {}
    sources = (meta.get("ood_sources") or meta.get("soundfonts", []) + meta.get("synth_families", [])
               or list(OOD_SOUNDFONTS) + list(OOD_SYNTH_FAMILIES))
    ood_names = ", ".join(Path(p).name if p.endswith((".sf2", ".sf3")) else f"{p} synthesis" for p in sources)
    text = [f"# Evaluation: {n} + {len(sets[SPLITS[1]])} clips of 30 s", "",
            "mir_eval, onset tolerance 50 ms; means over clips. Both splits hold music never trained on (music21 "
            "validation split + procedural parts of their own seeds).", "",
            "- **in-distribution**: GM programs held out from training (solo piano: program 0) rendered with the "
            "training soundfonts: it measures memorised timbre sources.",
            f"- **out-of-distribution**: timbre sources never trained on ({ood_names}): the honest yardstick; model "
            "selection and threshold calibration use a validation set of these sources (other music).", "",
            "## Both splits and their gap (ID - OOD)", "", gap_markdown(summaries)]
    for split, summary in summaries.items():
        text += ["", f"## {split}", "", eval_markdown(summary)]
    checks = ood_target_checks(summaries)
    if checks:
        text += ["", "Targets (issue 18, out-of-distribution split):", "", targets_markdown(checks)]
    old_checks = target_checks(summaries[SPLITS[0]])
    if old_checks:
        text += ["", "Earlier targets, in-distribution split:", "", targets_markdown(old_checks)]
    if not args.skip_references:
        text += ["", "## Shared reference examples (../shared/data/reference)", "",
                 markdown(evaluate_references(models=Path(args.models) if args.models else None))]
    minutes = (time.time() - t0) / 60
    text += ["", f"Rendering {rendered / 60:.1f} min (cached afterwards), whole run {minutes:.1f} min, "
             f"{args.threads} threads. Command: `timbreamt eval" + (f" --clips {args.clips}" if args.clips else "") + "`"]
    report = "\n".join(text) + "\n"
    (out / "eval.md").write_text(report)
    (out / "eval.json").write_text(json.dumps({"rows": rows, "summaries": summaries}, indent=1))
    eval_chart(summaries[SPLITS[0]], out / "eval.png")
    eval_chart(summaries[SPLITS[1]], out / "eval-ood.png", title="Out-of-distribution split (timbre sources never trained on)")
    print(report)
    print(f"eval: wrote {out / 'eval.md'}, {out / 'eval.json'}, {out / 'eval.png'} and {out / 'eval-ood.png'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the CLI."""
    s = sub.add_parser("data", help="synthesise a training/validation data set with fluidsynth")
    s.add_argument("--hours", type=float, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--split", choices=("train", "val"), default="train",
                   help="which music21 split to draw pieces from (val pieces are never trained on)")
    s.add_argument("--programs", default="", help="comma-separated GM programs (default: the training set)")
    s.add_argument("--midi", default=None, help="folder of your own .mid files to render too")
    s.add_argument("--midi-fraction", type=float, default=0.5, help="share of clips scored from --midi files")
    s.add_argument("--synth-fraction", type=float, default=0.0,
                   help="share of clips played by procedural instruments (additive, plucked, bowed, blown)")
    s.add_argument("--room-prob", type=float, default=0.0, help="share of clips put in a random room (reverb)")
    s.add_argument("--ood", action="store_true", help="render with the out-of-distribution timbre sources (the OPL3 "
                   "FM bank, the sampled Merlin bank, FM synthesis): a validation set for model selection and "
                   "calibration (--split val only)")
    s.add_argument("--eval-style", action="store_true", help="30-s clips of the evaluation's form (solo piano, "
                   "one instrument, 2-4 instruments in turn; instruments playing several voices): for fitting "
                   "what reads whole pieces, such as the instrument count (fit-count)")
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
    s.add_argument("--teacher-maps", default=None, type=_path_arg,
                   help="basicamt: a folder of teacher maps of the --data clips (`timbreamt teacher-maps`: the "
                   "reference graph's probabilities, calibrated to our labels) the model also learns to match "
                   "(distillation)")
    s.add_argument("--distill", type=float, default=1.0,
                   help="weight of the distillation loss against the label loss (with --teacher or --teacher-maps)")
    s.add_argument("--dynamic-mix", type=float, default=0.0,
                   help="septimbre: share of examples mixed on the fly from solo clips (0-1)")
    s.add_argument("--hard-mix", type=float, default=0.0,
                   help="septimbre: share of the dynamic mixtures built on a hard pair: two instruments of one "
                   "family (GM program // 8, or one procedural family) with overlapping registers (0-1)")
    s.add_argument("--harmonic-labels", type=float, default=0.0,
                   help="septimbre: share of notes whose silent octave and twelfth cells (where ghost notes "
                   "appear) the encoder learns as the note's instrument (0-1)")
    s.add_argument("--encoder-from", default=None,
                   help="septimbre: a Septimbre run or checkpoint whose timbre encoder to start from "
                   "(the note branch still comes from --init-from)")
    s.add_argument("--augment", choices=("basic", "full"), default="basic",
                   help="basic: gain, tilt, white noise; full: also EQ, compression, band-limiting, coloured noise")
    s.add_argument("--resume", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("teacher-maps", help="onset and frame maps of a teacher graph on every clip of a data set, "
                       "calibrated to its labels (for train --teacher-maps; resumable)")
    s.add_argument("--data", required=True, type=_path_arg, help="the clips (a `timbreamt data` folder)")
    s.add_argument("--out", required=True, type=_path_arg,
                   help="folder for the maps (one .npz per clip, teacher.json), not the data folder")
    s.add_argument("--model", default=None, type=_path_arg,
                   help="the teacher graph (default: the reference's basicamt_44100.onnx)")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_teacher_maps)

    s = sub.add_parser("export", help="export a run to float32-safe ONNX (with checks)")
    s.add_argument("run", help="run folder or checkpoint")
    s.add_argument("--out", default="export/models")
    s.add_argument("--name", default=None, help="file stem (default: the model name)")
    s.add_argument("--val", default=None, help="validation clips folder(s), comma-separated: calibrate the "
                   "decoding (thresholds, melodia) on them")
    s.add_argument("--val-clips", type=int, default=36, help="how many validation clips to calibrate on")
    s.add_argument("--notes-from", default=None, help="septimbre: take the note branch from this basicamt run")
    s.set_defaults(func=_cmd_export)

    s = sub.add_parser("eval", help="every system on the held-out evaluation set (and the shared examples)")
    s.add_argument("--set", default=".cache/evalset", help="folder of the rendered evaluation set (a cache)")
    s.add_argument("--ood-set", default=".cache/evalset-ood",
                   help="folder of the rendered out-of-distribution split (a cache)")
    s.add_argument("--out", default="eval-output", help="folder for eval.md, eval.json, eval.png")
    s.add_argument("--clips", type=int, default=None, help="only the first N clips of each category")
    s.add_argument("--models", default=None, help="folder holding basicamt.onnx and septimbre.onnx to evaluate "
                   "(default: the shipped graphs)")
    s.add_argument("--workers", type=int, default=2, help="rendering processes")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--skip-references", action="store_true", help="skip the shared reference examples")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_eval)
