"""The pip package: a wheel built from the source carries the models and py.typed, depends on no torch,
and installed into a fresh virtual environment (its runtime dependencies from the package index)
transcribes from a folder outside the repository, through the CLI and twice through the Python API.

Slow (one install from the index, ~1 min); it prints the wheel's size and the install time."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from conftest import REFERENCE, ROOT

pytestmark = pytest.mark.slow


def _copy_source(dst: Path) -> Path:
    """What a build needs, copied away from the checkout (so the build proves it needs nothing else
    and leaves no build/ or egg-info in the checkout that others are using)."""
    src = dst / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "python", src / "python", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (src / "export").mkdir()
    shutil.copytree(ROOT / "export" / "models", src / "export" / "models")
    return src


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = _copy_source(tmp)
    out = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(src)], check=True, capture_output=True, text=True)
    (whl,) = out.glob("timbreamt-*.whl")
    print(f"\nwheel {whl.name}: {whl.stat().st_size / 1e6:.2f} MB")
    return whl


def test_wheel_holds_models_and_types_and_no_torch(wheel):
    from timbreamt import __version__

    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(f"timbreamt-{__version__}.dist-info/METADATA").decode()
        entry = z.read(f"timbreamt-{__version__}.dist-info/entry_points.txt").decode()
        for name in ("basicamt", "septimbre"):
            packed = z.read(f"timbreamt/models/{name}.onnx")
            assert packed == (ROOT / "export" / "models" / f"{name}.onnx").read_bytes()
    assert "timbreamt/py.typed" in names
    package = ROOT / "python" / "timbreamt"
    modules = {f"timbreamt/{p.relative_to(package).as_posix()}" for p in package.rglob("*.py")
               if "__pycache__" not in p.parts}
    assert modules <= names, sorted(modules - names)
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    runtime = [r for r in requires if "extra ==" not in r]
    assert runtime and not [r for r in runtime if r.split("<")[0].split(">")[0].split("=")[0].strip() in
                            ("torch", "onnx", "scipy", "music21", "ray")], runtime
    torch = [r for r in requires if r.startswith("torch")]
    # a range, not a pin (the pins stay in requirements.lock)
    assert torch and all('extra == "train"' in r and "==" not in r.split(";")[0] and "<" in r for r in torch), torch
    assert any(r.startswith("ray") and not r.startswith("ray[") and 'extra == "cluster"' in r for r in requires), requires
    assert "timbreamt = timbreamt.cli:main" in entry


def test_installed_wheel_transcribes_outside_the_repository(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py, cli = venv / "bin" / "python", venv / "bin" / "timbreamt"
    t0 = time.perf_counter()
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                       capture_output=True, text=True)
    took = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    print(f"\ninstall of {wheel.name} with its dependencies into a fresh venv: {took:.1f} s")

    work = tmp_path / "elsewhere"          # outside the repository; no TIMBREAMT_* variables
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMBREAMT") and k != "PYTHONPATH"}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    mix = REFERENCE / "three_mix.wav"
    r = subprocess.run([str(cli), "transcribe", str(mix), "--instruments", "3", "-o", "out", "--quiet"],
                       cwd=work, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    data = json.loads((work / "out" / "three_mix.json").read_text())
    assert len(data["tracks"]) == 3 and sum(len(t["notes"]) for t in data["tracks"]) > 10
    assert (work / "out" / "three_mix.mid").stat().st_size > 100

    snippet = (
        "import importlib.util, sys, timbreamt\n"
        "assert importlib.util.find_spec('torch') is None, 'torch is installed'\n"
        "assert str(timbreamt.__file__).startswith(sys.prefix), timbreamt.__file__\n"
        f"a = timbreamt.transcribe({str(mix)!r}, instruments=3)\n"
        f"b = timbreamt.transcribe({str(mix)!r}, model='basicamt', instruments=None)\n"
        "assert len(a.tracks) == 3 and a.n_notes > 10 and len(b.tracks) == 1 and b.n_notes > 10\n"
        "a.to_midi('api.mid')\n"
        "print('ok', a.n_notes, b.n_notes)\n")
    r = subprocess.run([str(py), "-c", snippet], cwd=work, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr[-3000:]
    assert (work / "api.mid").read_bytes()[:4] == b"MThd"
    for args in (["--version"], ["-m", "timbreamt", "--version"]):
        exe = [str(cli)] if args[0] != "-m" else [str(py)]
        r = subprocess.run(exe + args, cwd=work, env=env, capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.startswith("timbreamt "), r.stderr
