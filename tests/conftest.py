"""Shared fixtures: paths to the reference data and small synthetic signals."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TIMBREAMT_SHARED", ROOT.parent / "shared"))
REFERENCE = SHARED / "data" / "reference"
REFERENCE_MODELS = SHARED / "data" / "reference-models"
SHIPPED_MODELS = ROOT / "export" / "models"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    assert REFERENCE.is_dir(), f"reference data missing: {REFERENCE}"
    return REFERENCE


@pytest.fixture(scope="session")
def shipped_models() -> Path:
    for name in ("basicamt", "septimbre"):
        assert (SHIPPED_MODELS / f"{name}.onnx").is_file(), f"shipped model missing: {name}.onnx"
    return SHIPPED_MODELS


def tone(midi: float, seconds: float, sr: int, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    f = 440.0 * 2 ** ((midi - 69) / 12)
    # a few harmonics, decaying, like a plucked string
    out = sum(amp / h * np.sin(2 * np.pi * f * h * t) for h in range(1, 5) if f * h < sr / 2)
    return (out * np.exp(-t * 1.5)).astype(np.float32)
