"""Commands of the web page and benchmarks: bundle, serve, bench."""
from __future__ import annotations

import argparse
import sys


def _cmd_bundle(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..tools.bundle import bundle

    examples = [Path(p) for p in args.example]
    sizes = bundle(args.out, examples, force=args.force)
    mb = {k: v / 1e6 for k, v in sizes.items()}
    print(f"bundle in {args.out}: {mb['total']:.1f} MB (pyodide + numpy {mb.get('pyodide', 0):.1f} MB, "
          f"onnxruntime-web {mb.get('ort', 0):.1f} MB, models {mb.get('models', 0):.2f} MB, "
          f"our wheel {mb.get('wheels', 0) * 1000:.0f} KB)")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from ..tools.serve import serve

    serve(args.dir, args.port, isolate=not args.no_isolation)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..tools.bench import SYSTEMS, bench, table, uncompiled_sources

    if args.web:
        from ..tools.bench import bench_web

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


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the CLI."""
    s = sub.add_parser("bundle", help="assemble the static web bundle")
    s.add_argument("out")
    s.add_argument("--example", action="append", default=[], help="audio file to ship as the page's example")
    s.add_argument("--force", action="store_true",
                   help="replace OUT even if it holds files that an earlier bundle did not make")
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
