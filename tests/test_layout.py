"""The package's layering, as folder rules (see ARCHITECTURE.md).

core (numpy only, shipped to Pyodide) <- runtime (no torch) <- training ([train] extra) <- tools; the
CLI on top. Every import of every module counts, including those inside functions."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "timbreamt"
PARTS = ("core", "runtime", "training", "tools")
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
# third-party packages each part may import (stdlib is always allowed)
THIRD_PARTY = {
    # pretty_midi: only inside Transcription.to_pretty_midi, an optional bridge (blocked at import below)
    "core": {"numpy", "pretty_midi"},
    "runtime": {"numpy", "onnxruntime", "soundfile", "mido", "tqdm"},
    "training": None,   # anything ([train] extra)
    "tools": None,
}
# parts of the package each part may import
INTERNAL = {
    "core": {"core"},
    "runtime": {"core", "runtime"},
    "training": {"core", "runtime", "training"},
    "tools": {"core", "runtime", "training", "tools"},
}
# what must stay unimportable while a part is imported (checked for real, in a fresh interpreter)
BLOCKED = {
    "core": ["torch", "onnx", "onnxruntime", "scipy", "soundfile", "soxr", "mido", "tqdm", "matplotlib", "mir_eval",
             "music21", "fluidsynth", "ray", "pretty_midi"],
    "runtime": ["torch", "onnx", "scipy", "soxr", "matplotlib", "mir_eval", "music21", "fluidsynth", "ray"],
}


def modules(part: str) -> list[Path]:
    return sorted(p for p in (PACKAGE / part).glob("*.py"))


def imports_of(path: Path, part: str) -> list[tuple[int, str]]:
    """(line, target) for each import: 'pkg' for third-party/stdlib, 'timbreamt.<part>' for ours."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((node.lineno, node.module))
            elif node.level == 1:
                found.append((node.lineno, f"timbreamt.{part}"))
            elif node.level == 2:
                target = (node.module or "").split(".")[0]
                if target:
                    found.append((node.lineno, f"timbreamt.{target}"))
                else:   # from .. import name: a part, or a name of the package root (__version__)
                    found += [(node.lineno, f"timbreamt.{a.name}" if a.name in PARTS else "timbreamt")
                              for a in node.names]
            else:
                found.append((node.lineno, "timbreamt.<beyond the package>"))
    return found


def test_every_module_lives_in_a_part():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py"], top
    folders = sorted(d.name for d in PACKAGE.iterdir() if d.is_dir() and d.name != "__pycache__")
    assert folders == sorted((*PARTS, "cli")), folders
    for part in (*PARTS, "cli"):
        assert (PACKAGE / part / "__init__.py").is_file(), part
        assert not [d for d in (PACKAGE / part).iterdir() if d.is_dir() and d.name != "__pycache__"], \
            f"{part}: one level of folders only"


@pytest.mark.parametrize("part", PARTS)
def test_imports_follow_the_folder_rules(part):
    wrong = []
    for path in modules(part):
        for line, target in imports_of(path, part):
            root = target.split(".")[0]
            if root == "timbreamt":
                sub = target.split(".")[1] if "." in target else ""
                if sub and sub not in INTERNAL[part]:
                    wrong.append(f"{path.name}:{line} imports {target}")
            elif root not in STDLIB and THIRD_PARTY[part] is not None and root not in THIRD_PARTY[part]:
                wrong.append(f"{path.name}:{line} imports {target}")
    assert not wrong, f"{part} breaks its import rules:\n" + "\n".join(wrong)


BLOCKER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked: {name}")
        return None
sys.meta_path.insert(0, Block())
import importlib
for mod in sys.argv[2].split(","):
    importlib.import_module(mod)
print("ok")
"""


@pytest.mark.parametrize("part", sorted(BLOCKED))
def test_part_imports_with_forbidden_packages_blocked(part):
    names = ",".join(f"timbreamt.{part}.{p.stem}" for p in modules(part) if p.stem != "__init__")
    out = subprocess.run([sys.executable, "-c", BLOCKER, ",".join(BLOCKED[part]), names],
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_the_package_and_cli_import_nothing_heavy_at_start():
    """`import timbreamt` and the CLI's module load no part beyond core (commands import what they need)."""
    code = ("import sys, timbreamt, timbreamt.cli; timbreamt.cli.build_parser(); "
            "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'onnxruntime', 'scipy', 'timbreamt') and not m.startswith('timbreamt.core'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.strip().split(","))
    assert {m for m in loaded if not m.startswith("timbreamt.cli")} <= {"timbreamt"}, loaded
