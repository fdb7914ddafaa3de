"""The fit-count command: fit the --instruments auto estimator (core/count.py) into a Septimbre graph."""
from __future__ import annotations

import argparse


def _folders(value: str) -> list[str]:
    """Comma-separated folders (argparse type): at least one."""
    folders = [v for v in value.split(",") if v.strip()]
    if not folders:
        raise argparse.ArgumentTypeError("expected one or more folders, comma-separated")
    return folders


def _cmd_fit_count(args: argparse.Namespace) -> int:
    from ..training.count import fit_graph_count

    fit_graph_count(args.graph, args.data, args.val, threads=args.threads,
                    features=args.features, select=args.select)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("fit-count", help="fit how --instruments auto counts instruments, into a septimbre graph")
    s.add_argument("graph", help="the septimbre .onnx to write the estimator into (its metadata; weights untouched)")
    s.add_argument("--data", required=True, type=_folders, help="rendered training clip folder(s), comma-separated (timbreamt data)")
    s.add_argument("--val", required=True, type=_folders, help="validation clip folder(s), comma-separated: choose the "
                   "regularisation on them (use timbre sources never trained on: timbreamt data --ood)")
    s.add_argument("--features", choices=("default", "all"), default="default",
                   help="what the estimator reads: default (polyphony, affinity eigenvalues, overlap within timbre "
                   "groups, mean cosine: 16) or all (those and the share of simultaneous onsets)")
    s.add_argument("--select", choices=("balanced", "accuracy"), default="balanced",
                   help="keep the regularisation whose validation balanced accuracy (every count weighs the same) "
                   "or accuracy (share of clips counted right) is best")
    s.add_argument("--threads", type=int, default=2)
    s.set_defaults(func=_cmd_fit_count)
