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


# ------------------------------------------------------------------------------------------------
# Browser fixtures (pytest-playwright reads only fixtures: the settings live in playwright.config.py)
import runpy  # noqa: E402
import shutil  # noqa: E402
import threading  # noqa: E402

PLAYWRIGHT_CONFIG = runpy.run_path(str(ROOT / "playwright.config.py"))
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, **PLAYWRIGHT_CONFIG["launch_args"]}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, **PLAYWRIGHT_CONFIG["context_args"]}


@pytest.fixture(scope="session")
def web_bundle(tmp_path_factory, shipped_models) -> Path:
    from timbreamt.tools.bundle import bundle

    out = tmp_path_factory.mktemp("bundle") / "web"
    bundle(out, [REFERENCE / "three_mix.wav"])
    return out


def _serve(directory: Path, isolate: bool):
    from timbreamt.tools.serve import make_server

    server = make_server(directory, 0, isolate=isolate)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


@pytest.fixture(scope="session")
def base_url(web_bundle):
    server, url = _serve(web_bundle, isolate=True)
    yield url
    server.shutdown()


@pytest.fixture(scope="session")
def notedigger_url(tmp_path_factory, web_bundle):
    """A copy of noteDigger with the bundle at ./timbreamt/ and the plugin's one script tag, served
    WITHOUT cross-origin isolation (as noteDigger must be)."""
    root = tmp_path_factory.mktemp("nd") / "noteDigger"
    shutil.copytree(SHARED / "noteDigger", root)
    for p in root.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    shutil.copytree(web_bundle, root / "timbreamt")
    index = root / "index.html"
    html = index.read_text(encoding="utf-8")
    tag = '<script src="./timbreamt/notedigger/timbreamt-plugin.js"></script>'
    index.write_text(html.replace("</body>", f"{tag}\n</body>"), encoding="utf-8")
    server, url = _serve(root, isolate=False)
    yield url, root
    server.shutdown()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
