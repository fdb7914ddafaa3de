"""Where the tools find files outside the package: the repository checkout and its ../shared data.

The runtime never needs these (its models are resolved by runtime/model.py); evaluation, benchmarks
and the web bundle use the reference examples and graphs, which live beside a checkout."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
# ../shared beside the checkout, or $TIMBREAMT_SHARED
SHARED_DIR = Path(os.environ.get("TIMBREAMT_SHARED", REPO_ROOT.parent / "shared"))
REFERENCE_DIR = SHARED_DIR / "data" / "reference"
REFERENCE_MODELS_DIR = SHARED_DIR / "data" / "reference-models"
