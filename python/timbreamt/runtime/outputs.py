"""Writing a Transcription to files: MIDI, JSON and CSV next to each other, as a set.

- Names cannot collide: ``plan_outputs`` gives every input of a batch its own outputs; inputs that share
  a name (a/x.wav, b/x.wav) keep their relative folders under the output folder (out/a/x.mid,
  out/b/x.mid), and the caller is told so.
- All formats or none: every content is rendered, then written to temporary files beside the targets,
  then all are renamed; if anything fails, the files this call created are removed again. Without
  ``overwrite`` an existing file is never replaced (the final step links, which refuses to clobber).
- Modes follow the umask (the temporary file is created with 0666 & ~umask, as ``open`` would).
- Temporary names carry the writer's process id; those of processes that no longer exist (a killed
  run) are removed before writing into a folder. They fit the file system's name limit, and a target
  name over that limit is refused before any work.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

from ..core.errors import OutputError
from ..core.midi import csv_text, midi_bytes
from ..core.transcription import Transcription

FORMATS = ("midi", "json", "csv")
SUFFIX = {"midi": ".mid", "json": ".json", "csv": ".csv"}
TEMP_SUFFIX = ".part"
DEFAULT_NAME_MAX = 255
# temporary files of an older naming (no process id) are removed once this old (seconds)
STALE_UNKNOWN_SECONDS = 3600
_TEMP = re.compile(r"^\..*\.(?P<pid>\d+)\.[0-9a-f]{8}\.part$")
_OLD_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.part$")


def output_paths(audio_path: str | Path, out_dir: str | Path, formats: Sequence[str]) -> dict[str, Path]:
    """{format: out_dir/<stem of audio_path><suffix>} for one input."""
    stem = Path(audio_path).stem
    return {f: Path(out_dir) / f"{stem}{SUFFIX[f]}" for f in formats}


def plan_outputs(inputs: Sequence[str | Path], out_dir: str | Path,
                 formats: Sequence[str]) -> tuple[list[tuple[Path, dict[str, Path]]], list[str]]:
    """Outputs of a batch that cannot collide: ([(input, {format: path})], notes for the user).

    An input given twice is transcribed once. Inputs whose names share a stem (compared without case,
    as some file systems do) keep their folders relative to the inputs' common folder under ``out_dir``;
    if that is not enough (x.wav and x.flac in one folder) the output keeps the input's whole name
    (x.wav.mid); a remaining clash gets a number."""
    out = Path(out_dir)
    notes: list[str] = []
    unique: list[Path] = []
    seen: dict[str, Path] = {}
    for item in inputs:
        p = Path(item)
        key = os.path.abspath(p)     # the same name spelled twice; a link under another name is its own input
        if key in seen:
            notes.append(f"{p} is given more than once: transcribed once")
            continue
        seen[key] = p
        unique.append(p)
    by_stem: dict[str, list[Path]] = {}
    for p in unique:
        by_stem.setdefault(p.stem.casefold(), []).append(p)
    base: dict[Path, Path] = {p: out / p.stem for p in unique}    # output path without its suffix
    for group in by_stem.values():
        if len(group) < 2:
            continue
        parents = [Path(os.path.abspath(p)).parent for p in group]
        common = Path(os.path.commonpath(parents))
        for p, parent in zip(group, parents):
            base[p] = out / parent.relative_to(common) / p.stem
        clash: dict[str, list[Path]] = {}
        for p in group:
            clash.setdefault(str(base[p]).casefold(), []).append(p)
        for same in clash.values():
            if len(same) > 1:
                for p in same:
                    base[p] = base[p].with_name(p.name)
        shown = ", ".join(f"{p} -> {base[p]}{SUFFIX[formats[0]]}" for p in group)
        notes.append(f"{len(group)} inputs share the name {group[0].stem!r}: their outputs keep their folders "
                     f"relative to {common}, or their whole names ({shown})")
    used: set[str] = set()
    plan = []
    for p in unique:
        b = base[p]
        n = 2
        while str(b).casefold() in used:
            b = base[p].with_name(f"{base[p].name}-{n}")
            n += 1
        if b != base[p]:
            notes.append(f"{p}: outputs named {b.name} (the name was taken)")
        used.add(str(b).casefold())
        plan.append((p, {f: b.with_name(b.name + SUFFIX[f]) for f in formats}))
    return plan, notes


def _name_max(folder: Path) -> int:
    for d in (folder, *folder.parents):
        if d.is_dir():
            try:
                return int(os.pathconf(d, "PC_NAME_MAX"))
            except (OSError, ValueError):
                return DEFAULT_NAME_MAX
    return DEFAULT_NAME_MAX


def check_writable(paths: dict[str, Path], overwrite: bool) -> None:
    """Fail before any work if an output exists (without overwrite), its name is too long for its file
    system, or its folder is not a folder."""
    for p in paths.values():
        if (p.exists() or p.is_symlink()) and not overwrite:
            raise OutputError(f"{p} exists (use --overwrite to replace it)")
        if p.is_dir():
            raise OutputError(f"{p} is a folder")
        limit = _name_max(p.parent)
        if len(os.fsencode(p.name)) > limit:
            raise OutputError(f"{p}: output name of {len(os.fsencode(p.name))} bytes, the file system allows {limit}: "
                              "rename the input or shorten it")
        for d in (p.parent, *p.parent.parents):
            if d.exists():
                if not d.is_dir():
                    raise OutputError(f"{d} is not a folder")
                break


def _create_temp(target: Path) -> tuple[int, Path]:
    """An exclusive new temporary file beside ``target``, mode 0666 & ~umask; (fd, path). Its name
    (.<start of target's name>.<pid>.<random>.part) fits the folder's name limit."""
    tag = f".{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    room = _name_max(target.parent) - 1 - len(tag)
    name = os.fsdecode(os.fsencode(target.name)[:max(1, room)])
    tmp = target.parent / f".{name}{tag}"
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


_CLEANED: set[str] = set()      # folders already cleaned by this process (a batch writes many files into one)


def clean_stale_temps(folder: Path) -> list[Path]:
    """Remove the temporary files of writers that no longer run (a killed run) from ``folder``;
    returns what was removed. Those of running processes are left alone."""
    _CLEANED.add(os.path.abspath(folder))
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for e in entries:
        if not e.name.endswith(TEMP_SUFFIX) or not e.name.startswith("."):
            continue
        m = _TEMP.match(e.name)
        try:
            stale = (not _pid_alive(int(m["pid"]))) if m else \
                bool(_OLD_TEMP.match(e.name)) and now - e.stat().st_mtime > STALE_UNKNOWN_SECONDS
            if stale and e.is_file(follow_symlinks=False):
                os.unlink(e.path)
                removed.append(Path(e.path))
        except OSError:
            pass
    return removed


def prepare_folder(folder: str | Path) -> None:
    """Create ``folder`` and prove it writable by creating and removing a temporary file there, so a
    read-only or full folder is reported before any transcription. Removes stale temporary files."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(folder / "probe")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise OutputError(f"cannot write into {folder}: {exc.strerror or exc}") from exc
    clean_stale_temps(folder)


def render(result: Transcription, formats: Sequence[str]) -> dict[str, bytes]:
    """The bytes of each format."""
    makers = {"midi": lambda: midi_bytes(result), "json": lambda: (result.to_json(indent=1) + "\n").encode(),
              "csv": lambda: csv_text(result).encode()}
    return {f: makers[f]() for f in formats}


def write_set(contents: dict[Path, bytes], overwrite: bool = False) -> list[Path]:
    """Write files as a set: all of them, or (on any failure) none that this call created."""
    temps: dict[Path, Path] = {}
    created: list[Path] = []
    target = None
    try:
        for target, data in contents.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = _create_temp(target)
            temps[target] = tmp
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        for target, tmp in temps.items():
            existed = target.exists() or target.is_symlink()
            if overwrite:
                os.replace(tmp, target)
            elif existed:
                raise FileExistsError(errno.EEXIST, "exists (use --overwrite to replace it)")
            else:
                try:
                    os.link(tmp, target)        # refuses to replace a file created meanwhile
                    os.unlink(tmp)
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                        raise
                    os.replace(tmp, target)     # a file system without hard links
            if not existed:
                created.append(target)
    except BaseException as exc:
        for tmp in temps.values():
            try:
                os.unlink(tmp)
            except OSError:
                pass
        for p in created:
            try:
                os.unlink(p)
            except OSError:
                pass
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from exc
        raise
    return list(contents)


def write_outputs(result: Transcription, paths: dict[str, Path], overwrite: bool = False) -> list[Path]:
    """Write every requested format ({format: path}) as a set; all contents are rendered before the
    first file is touched. Raises OutputError (nothing of this call is left behind)."""
    check_writable(paths, overwrite)
    contents = render(result, list(paths))
    for folder in {p.parent for p in paths.values()}:
        if os.path.abspath(folder) not in _CLEANED and folder.is_dir():
            clean_stale_temps(folder)
    return write_set({p: contents[f] for f, p in paths.items()}, overwrite)
