"""Where the tools find files outside the package: the source checkout and the ../shared reference data.

The runtime never needs these (its models travel in the package: runtime/model.py). Evaluation,
benchmarks and the web bundle use the reference examples and graphs, which live beside a checkout
(or wherever $TIMBREAMT_SHARED points), and the bundle needs the checkout's web/ and node_modules/.
From an installed wheel, outside a checkout, these tools say so in one line instead of failing later."""
from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import TimbreamtError

# python/timbreamt/tools/paths.py -> the checkout, when the package runs from one (editable install)
REPO_ROOT = Path(__file__).resolve().parents[3]
# ../shared beside the checkout, or $TIMBREAMT_SHARED
SHARED_DIR = Path(os.environ["TIMBREAMT_SHARED"]) if os.environ.get("TIMBREAMT_SHARED") else REPO_ROOT.parent / "shared"
REFERENCE_DIR = SHARED_DIR / "data" / "reference"
REFERENCE_MODELS_DIR = SHARED_DIR / "data" / "reference-models"


class MissingDataError(TimbreamtError):
    """A tool's input folder (reference data, the checkout's web sources) is not where it looks."""

    exit_code = 6


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else MissingDataError naming it and how to point the tools at it."""
    if not Path(path).is_dir():
        hint = ("set TIMBREAMT_SHARED to the folder that holds data/reference and data/reference-models"
                if "shared" in what or "reference" in what else
                "run this from a source checkout of timbreamt (git clone; make setup)")
        raise MissingDataError(f"{what} not found at {path}: {hint}")
    return Path(path)
