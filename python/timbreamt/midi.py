"""Writers: MIDI (one named track per instrument, each on its own channel), JSON and CSV.

The renderers (midi_bytes, csv_text) use the standard library only: they also run in Pyodide.

Writes are atomic (a temporary file in the same folder, then a rename): a failed run never leaves a
half-written file, and an existing file is only replaced with ``overwrite``.
"""
from __future__ import annotations

import csv
import io
import os
import struct
import tempfile
from pathlib import Path

from .errors import OutputError
from .transcription import Transcription

TICKS_PER_BEAT = 480
TEMPO_US = 500000        # 120 bpm: one beat = 0.5 s, so ticks = seconds * 960
FORMATS = ("midi", "json", "csv")
SUFFIX = {"midi": ".mid", "json": ".json", "csv": ".csv"}
# General MIDI channel 10 (index 9) is percussion: never put a pitched track there.
CHANNELS = [c for c in range(16) if c != 9]


def _seconds_to_ticks(seconds: float) -> int:
    return int(round(seconds * TICKS_PER_BEAT * 1_000_000 / TEMPO_US))


def _varlen(value: int) -> bytes:
    """MIDI variable-length quantity."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack(">I", len(body)) + body


def _meta(kind: int, data: bytes) -> bytes:
    return bytes([0xFF, kind]) + _varlen(len(data)) + data


def midi_bytes(result: Transcription, programs: list[int] | None = None) -> bytes:
    """A type-1 Standard MIDI File: a tempo track, then one named track per instrument on its own
    channel (skipping the drum channel). Standard library only, so the page (Pyodide) writes the very
    same bytes as the CLI."""
    tracks = [b"\x00" + _meta(0x51, TEMPO_US.to_bytes(3, "big")) + b"\x00" + _meta(0x03, b"timbreamt")
              + b"\x00" + _meta(0x2F, b"")]
    for i, track in enumerate(result.tracks):
        channel = CHANNELS[i % len(CHANNELS)]
        program = programs[i] if programs and i < len(programs) else 0
        body = bytearray(b"\x00" + _meta(0x03, track.name.encode("utf-8")))
        body += b"\x00" + bytes([0xC0 | channel, program & 0x7F])
        events = []
        for n in track.notes:
            on = _seconds_to_ticks(n.start)
            off = max(_seconds_to_ticks(n.end), on + 1)
            events.append((on, 1, bytes([0x90 | channel, n.pitch & 0x7F, max(1, min(127, n.velocity))])))
            events.append((off, 0, bytes([0x80 | channel, n.pitch & 0x7F, 0])))
        events.sort(key=lambda e: (e[0], e[1]))   # note-offs first at equal ticks
        now = 0
        for tick, _, msg in events:
            body += _varlen(tick - now) + msg
            now = tick
        body += b"\x00" + _meta(0x2F, b"")
        tracks.append(bytes(body))
    header = struct.pack(">HHH", 1, len(tracks), TICKS_PER_BEAT)
    return _chunk(b"MThd", header) + b"".join(_chunk(b"MTrk", t) for t in tracks)


def csv_text(result: Transcription) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["track", "pitch", "start", "end", "velocity"])
    for t in result.tracks:
        for n in t.notes:
            w.writerow([t.name, n.pitch, f"{n.start:.6f}", f"{n.end:.6f}", n.velocity])
    return out.getvalue()


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


# ------------------------------------------------------------------------------------------------
# Reading (training data from users' MIDI files, reference notes for evaluation): needs mido.
def midi_parts(path: str | Path, skip_drums: bool = True) -> list:
    """Notes of a MIDI file, one numpy array (n, 3) of (start_s, end_s, pitch) per track with notes.

    Tempo changes from any track apply to all (as in a type-1 file); notes on the drum channel (10)
    are skipped unless ``skip_drums`` is False. Raises DataError naming the file when it cannot be read.
    """
    import mido
    import numpy as np

    from .errors import DataError

    try:
        mid = mido.MidiFile(str(path))
    except Exception as exc:   # mido raises OSError, EOFError, ValueError, KeyError... on bad files
        raise DataError(f"cannot read MIDI file {path}: {exc or type(exc).__name__}") from exc
    tempos = []
    for track in mid.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "set_tempo":
                tempos.append((tick, msg.tempo))
    tempos.sort()

    def seconds(tick: int) -> float:
        out, last_tick, tempo = 0.0, 0, 500000
        for t, new_tempo in tempos:
            if t >= tick:
                break
            out += mido.tick2second(t - last_tick, mid.ticks_per_beat, tempo)
            last_tick, tempo = t, new_tempo
        return out + mido.tick2second(tick - last_tick, mid.ticks_per_beat, tempo)

    parts = []
    for track in mid.tracks:
        tick, open_notes, notes = 0, {}, []
        for msg in track:
            tick += msg.time
            if not hasattr(msg, "note") or (skip_drums and msg.channel == 9):
                continue
            if msg.type == "note_on" and msg.velocity > 0:
                open_notes.setdefault((msg.channel, msg.note), []).append(tick)
            elif msg.type in ("note_off", "note_on") and open_notes.get((msg.channel, msg.note)):
                start = open_notes[(msg.channel, msg.note)].pop(0)
                notes.append((seconds(start), seconds(tick), msg.note))
        if notes:
            parts.append(np.array(sorted(notes), dtype=np.float64))
    return parts
