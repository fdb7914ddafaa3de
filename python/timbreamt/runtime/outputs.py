"""Writing a Transcription to files: MIDI, JSON and CSV next to each other.

Writes are atomic (a temporary file in the same folder, then a rename): a failed run never leaves a
half-written file, and an existing file is only replaced with ``overwrite``.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..core.errors import OutputError
from ..core.midi import csv_text, midi_bytes
from ..core.transcription import Transcription

FORMATS = ("midi", "json", "csv")
SUFFIX = {"midi": ".mid", "json": ".json", "csv": ".csv"}


def output_paths(audio_path: str | Path, out_dir: str | Path, formats: list[str]) -> dict[str, Path]:
    stem = Path(audio_path).stem
    return {f: Path(out_dir) / f"{stem}{SUFFIX[f]}" for f in formats}


def check_writable(paths: dict[str, Path], overwrite: bool) -> None:
    """Fail before any work if an output exists (without overwrite) or its folder is unusable."""
    for p in paths.values():
        if p.exists() and not overwrite:
            raise OutputError(f"{p} exists (use --overwrite to replace it)")
        if p.parent.exists() and not p.parent.is_dir():
            raise OutputError(f"{p.parent} is not a folder")


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_outputs(result: Transcription, paths: dict[str, Path], overwrite: bool = False) -> list[Path]:
    """Write every requested format; all contents are rendered before the first file is touched."""
    check_writable(paths, overwrite)
    render = {"midi": lambda: midi_bytes(result), "json": lambda: (result.to_json(indent=1) + "\n").encode(),
              "csv": lambda: csv_text(result).encode()}
    contents = {f: render[f]() for f in paths}
    written = []
    try:
        for f, p in paths.items():
            atomic_write(p, contents[f])
            written.append(p)
    except OSError as exc:
        raise OutputError(f"cannot write {p}: {exc.strerror or exc}") from exc
    return written
