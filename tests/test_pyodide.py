"""The post-processing gives identical results in Pyodide (Node, no browser) and CPython."""
import json
import shutil
import subprocess
import sys
from pathlib import Path


HERE = Path(__file__).parent


def test_node_pyodide_matches_cpython(web_bundle):
    node = shutil.which("node")
    assert node, "node is required (Debian's nodejs)"
    want = subprocess.run([sys.executable, str(HERE / "pyodide_parity.py")], capture_output=True, text=True, check=True)
    got = subprocess.run([node, str(HERE / "pyodide_parity.js"), str(web_bundle), str(HERE / "pyodide_parity.py")],
                         capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr[-2000:]
    a = json.loads(want.stdout.strip().splitlines()[-1])
    b = json.loads(got.stdout.strip().splitlines()[-1])
    assert a["json"]["tracks"] and sum(len(t["notes"]) for t in a["json"]["tracks"]) >= 40
    assert len(a["json"]["tracks"]) == 2          # auto finds the two synthetic timbres
    assert a == b
