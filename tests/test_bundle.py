"""The web bundle's build steps that run in CPython: windowed graph variants (onnx package), the
core-only wheel (setuptools, pyproject.toml) and the generated constants.json."""
import json
import shutil
import zipfile

import numpy as np
import pytest

from conftest import REFERENCE_MODELS, ROOT, tone


def test_windowed_variant_requires_crop(shipped_models, tmp_path):
    """The same graph with `crop` required (what onnxruntime-web can feed): same outputs, same metadata."""
    import onnxruntime as ort

    from timbreamt.core.graph_metadata import read_metadata
    from timbreamt.tools.bundle import write_windowed_variant

    src = tmp_path / "septimbre.onnx"
    shutil.copy(shipped_models / "septimbre.onnx", src)
    out = write_windowed_variant(src)
    assert out == tmp_path / "septimbre.windowed.onnx"
    assert read_metadata(out.read_bytes()) == read_metadata(src.read_bytes()) != {}
    so = ort.SessionOptions()
    so.log_severity_level = 3
    plain = ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    windowed = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
    assert [i.name for i in windowed.get_inputs()] == ["audio", "crop"]
    assert [o.name for o in windowed.get_outputs()] == [o.name for o in plain.get_outputs()]
    audio = np.tile(tone(60, 2.0, 44100), 2)[None, None]
    crop = np.array([8, 12], np.int64)
    for a, b in zip(plain.run(None, {"audio": audio, "crop": crop}), windowed.run(None, {"audio": audio, "crop": crop})):
        assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="crop"):          # required now: running without it fails
        windowed.run(None, {"audio": audio})
    assert write_windowed_variant(out) is None             # no default left to remove
    ref = tmp_path / "ref.onnx"
    shutil.copy(REFERENCE_MODELS / "basicamt_44100.onnx", ref)
    assert write_windowed_variant(ref) is None             # a graph without the input gets no variant


def test_core_wheel_is_built_from_pyproject(tmp_path):
    import tomllib

    from timbreamt import __version__
    from timbreamt.tools.bundle import build_wheel, core_pyproject

    wheel = build_wheel(tmp_path)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert wheel.name == f"{project['name']}-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(f"timbreamt-{__version__}.dist-info/METADATA").decode()
    modules = sorted(n for n in names if n.endswith(".py"))
    assert modules == ["timbreamt/__init__.py"] + sorted(
        f"timbreamt/core/{p.name}" for p in (ROOT / "python" / "timbreamt" / "core").glob("*.py"))
    assert "Requires-Dist: numpy" in meta and "onnxruntime" not in meta.split("\n\n")[0]
    # whatever package selection the full project uses, the core build selects the core only
    text = core_pyproject('[project]\nname = "timbreamt"\ndependencies = [\n  "numpy",\n  "onnxruntime",\n]\n'
                          '[project.scripts]\ntimbreamt = "x:y"\n[tool.setuptools]\npackage-dir = {"timbreamt.models" = "m"}\n'
                          '[tool.setuptools.packages.find]\nwhere = ["python"]\n[tool.setuptools.dynamic]\nversion = {attr = "a"}\n')
    parsed = tomllib.loads(text)
    assert parsed["project"]["dependencies"] == ["numpy"] and "scripts" not in parsed["project"]
    assert parsed["tool"]["setuptools"]["packages"] == ["timbreamt", "timbreamt.core"]
    assert parsed["tool"]["setuptools"]["package-dir"] == {"": "python"}
    assert parsed["tool"]["setuptools"]["dynamic"] == {"version": {"attr": "a"}}


def test_bundle_writes_the_constants_the_page_reads(web_bundle):
    from timbreamt.core import constants as C

    consts = json.loads((web_bundle / "constants.json").read_text())
    assert consts["GRAPH_SAMPLE_RATE"] == C.GRAPH_SAMPLE_RATE and consts["N_PITCHES"] == C.N_PITCHES
    assert consts["MIDI_MIN"] == C.MIDI_MIN and consts["HOP_SECONDS"] == C.HOP_SECONDS
    # no JS code of the bundle writes these numbers itself (comments and the MP3 format's own rate
    # table aside)
    import re

    for js in list(web_bundle.glob("*.js")) + list((web_bundle / "notedigger").glob("*.js")):
        for line in js.read_text().splitlines():
            code = line.split("//")[0]
            if code.strip().startswith("*") or "MPEG" in line:
                continue
            found = re.findall(r"\b(44100|22050|84|256|512)\b", code)
            assert not found, f"{js.name} writes {found} itself: {line.strip()}"


def test_bundle_never_deletes_a_folder_it_did_not_make(tmp_path):
    """A non-empty folder without the bundle's marker is refused (one line, exit 7 from the CLI), its
    files untouched; --force replaces it; an earlier bundle is replaced without asking."""
    import subprocess
    import sys

    from timbreamt.tools.bundle import BUNDLE_MARKER, BundleError, check_replaceable

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("three years of work")
    with pytest.raises(BundleError, match="not a bundle made by timbreamt"):
        check_replaceable(mine)
    check_replaceable(mine, force=True)                  # allowed when asked for
    out = subprocess.run([sys.executable, "-m", "timbreamt", "bundle", str(mine)], capture_output=True, text=True)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "--force" in out.stderr
    assert (mine / "thesis.txt").read_text() == "three years of work"
    empty = tmp_path / "empty"
    empty.mkdir()
    check_replaceable(empty)
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / BUNDLE_MARKER).write_text("")
    (earlier / "index.html").write_text("")
    check_replaceable(earlier)
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(BundleError, match="not a folder"):
        check_replaceable(a_file)


def test_tools_outside_a_checkout_name_the_missing_data(tmp_path):
    """bench without the shared reference data: a one-line error naming TIMBREAMT_SHARED."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TIMBREAMT_SHARED": str(tmp_path / "nowhere")}
    out = subprocess.run([sys.executable, "-m", "timbreamt", "bench", "--durations", "1", "--systems", "basic-pitch"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 6, out.stderr
    assert "Traceback" not in out.stderr and "TIMBREAMT_SHARED" in out.stderr
