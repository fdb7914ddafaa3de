"""What a batch transcribes: input discovery (a folder, a glob, a manifest or one file), per-file
options, and where each file's outputs go (the input's folder structure mirrored under the output folder).

No Ray here: this runs on the driver before anything is started, so every problem with the inputs is a
one-line BatchError before any work is done.
"""
from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..core import constants as C
from ..core.errors import TimbreamtError

# what a folder or a glob picks up: the extensions libsndfile decodes (case-insensitive)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".w64", ".caf",
                    ".au", ".rf64")
MANIFEST_EXTENSIONS = (".csv", ".jsonl", ".ndjson")
# the per-file options a manifest may set (the CLI's options of the same names give the defaults)
OPTION_NAMES = ("model", "instruments", "onset_threshold", "frame_threshold", "min_note_ms", "melodia")


class BatchError(TimbreamtError):
    """The batch cannot start: its inputs, manifest, options or cluster are unusable."""

    exit_code = 2


@dataclass(frozen=True)
class Job:
    """One input file: its path, its path relative to the collection's root (what the outputs mirror)
    and its options (every name of OPTION_NAMES; None means the model's default)."""

    path: Path
    rel: Path
    options: Mapping[str, object] = field(default_factory=dict)


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _glob_root(pattern: str) -> Path:
    """The leading folders of a glob pattern that hold no wildcard: what the outputs mirror from."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if _is_glob(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _audio_files(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))    # hidden folders (staging) skipped
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in extensions:
                found.append(Path(dirpath) / name)
    return found


def parse_instruments(value: object, where: str) -> int | str | None:
    """'auto', a whole number >= 1, or empty/None (the default). One-line BatchError otherwise."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "default")):
        return None
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= C.MAX_INSTRUMENTS:
        raise BatchError(f"{where}: instruments must be 'auto' or a whole number from 1 to {C.MAX_INSTRUMENTS}, "
                         f"got {value!r}")
    return value


def _parse_float(value: object, name: str, where: str) -> float | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise BatchError(f"{where}: {name} must be a number, got {value!r}") from None
    if out != out or out < 0:
        raise BatchError(f"{where}: {name} must be a number >= 0, got {value!r}")
    return out


def _parse_melodia(value: object, where: str) -> bool | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("on", "true", "1", "yes"):
        return True
    if text in ("off", "false", "0", "no"):
        return False
    raise BatchError(f"{where}: melodia must be on/off (or true/false), got {value!r}")


def parse_options(raw: Mapping[str, object], where: str) -> dict[str, object]:
    """Check the options of one manifest row (unknown names are refused, so a typo is not ignored)."""
    unknown = sorted(set(raw) - set(OPTION_NAMES) - {"path"})
    if unknown:
        raise BatchError(f"{where}: unknown column(s) {', '.join(unknown)}; allowed: path, {', '.join(OPTION_NAMES)}")
    out: dict[str, object] = {}
    if "model" in raw and raw["model"] not in (None, ""):
        out["model"] = str(raw["model"]).strip()
    if "instruments" in raw:
        instruments = parse_instruments(raw["instruments"], where)
        if instruments is not None:
            out["instruments"] = instruments
    for name in ("onset_threshold", "frame_threshold", "min_note_ms"):
        if name in raw:
            value = _parse_float(raw[name], name, where)
            if value is not None:
                out[name] = value
    if "melodia" in raw:
        melodia = _parse_melodia(raw["melodia"], where)
        if melodia is not None:
            out["melodia"] = melodia
    return out


def _manifest_rows(manifest: Path) -> Iterable[tuple[str, dict]]:
    """(where, row) of a CSV (header with a ``path`` column) or JSON Lines manifest (one object a line)."""
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchError(f"{manifest}: cannot read the manifest ({exc})") from exc
    if manifest.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "path" not in [f.strip() for f in reader.fieldnames]:
            raise BatchError(f"{manifest}: a CSV manifest needs a header row with a 'path' column")
        for i, row in enumerate(reader, start=2):
            if None in row:
                raise BatchError(f"{manifest}:{i}: more fields than the header has")
            yield f"{manifest}:{i}", {k.strip(): v for k, v in row.items()}
    else:
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BatchError(f"{manifest}:{i}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise BatchError(f"{manifest}:{i}: each line must be a JSON object with a 'path'")
            yield f"{manifest}:{i}", row


def _from_manifest(manifest: Path) -> list[tuple[Path, dict]]:
    items = []
    for where, row in _manifest_rows(manifest):
        path = row.get("path")
        if not isinstance(path, str) or not path.strip():
            raise BatchError(f"{where}: missing 'path'")
        p = Path(path.strip()).expanduser()
        if not p.is_absolute():     # relative paths are relative to the manifest, not to the current folder
            p = manifest.parent / p
        items.append((p, parse_options(row, where)))
    if not items:
        raise BatchError(f"{manifest}: the manifest lists no files")
    return items


def discover(source: str | Path, extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> list[Job]:
    """The jobs of a batch, in a stable order.

    source: a folder (searched recursively for ``extensions``; hidden files and folders skipped), a glob
    pattern (``**`` recurses), a manifest (.csv with a ``path`` header, or .jsonl objects with ``path``,
    each row optionally setting OPTION_NAMES), or one audio file. Each job's ``rel`` is its path below the
    collection's root: the folder, the glob's fixed prefix, or the deepest folder holding every manifest
    entry. Missing manifest entries are kept (they fail one by one, in the results); a source that
    matches nothing is a BatchError.
    """
    text = str(source)
    extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    p = Path(text).expanduser()
    items: list[tuple[Path, dict]]
    if p.is_dir():
        root = p
        items = [(f, {}) for f in _audio_files(p, extensions)]
        if not items:
            raise BatchError(f"{p}: no audio files ({', '.join(extensions)}) in this folder or below")
    elif p.is_file() and p.suffix.lower() in MANIFEST_EXTENSIONS:
        items = _from_manifest(p)
        parents = [str(f.parent.resolve()) for f, _ in items]
        root = Path(os.path.commonpath(parents))
    elif p.is_file():
        root, items = p.parent, [(p, {})]
    elif _is_glob(text):
        root = _glob_root(text)
        items = [(Path(f), {}) for f in sorted(glob.glob(text, recursive=True))
                 if Path(f).is_file() and Path(f).suffix.lower() in extensions]
        if not items:
            raise BatchError(f"{text}: the pattern matches no audio files ({', '.join(extensions)})")
    else:
        raise BatchError(f"{text}: no such file, folder or manifest")
    root_resolved = root.resolve()
    jobs, seen = [], set()
    for f, options in items:
        resolved = f.resolve()
        if resolved in seen:        # a manifest listing a file twice would transcribe and write it twice
            continue
        seen.add(resolved)
        try:
            rel = resolved.relative_to(root_resolved)
        except ValueError:
            rel = Path(resolved.name)
        jobs.append(Job(resolved, rel, options))
    return jobs


def output_paths_for(job: Job, out_dir: Path, formats: list[str]) -> dict[str, Path]:
    """Where a job's outputs go: its relative folder under ``out_dir``, named like `timbreamt transcribe`."""
    from ..runtime.outputs import SUFFIX

    folder = out_dir / job.rel.parent
    return {f: folder / f"{job.rel.stem}{SUFFIX[f]}" for f in formats}


def check_collisions(jobs: list[Job], out_dir: Path, formats: list[str]) -> None:
    """Two inputs that would write the same output (a.wav and a.flac in one folder) stop the batch
    before it starts, naming both."""
    owner: dict[Path, Path] = {}
    for job in jobs:
        for p in output_paths_for(job, out_dir, formats).values():
            if p in owner:
                raise BatchError(f"{owner[p]} and {job.path} would both write {p}; rename one, or list them "
                                 "in a manifest in different folders")
            owner[p] = job.path
