"""Renderers of a Transcription: MIDI bytes (one named track per instrument, each on its own channel)
and CSV text. Standard library only: they also run in Pyodide. Writing files is runtime/outputs.py."""
from __future__ import annotations

import csv
import io
import struct

from .transcription import Transcription

TICKS_PER_BEAT = 480
TEMPO_US = 500000        # 120 bpm: one beat = 0.5 s, so ticks = seconds * 960
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


# the CSV header names the unit of the times (pitch is a MIDI note number, velocity 1..127)
CSV_HEADER = ("track", "pitch", "start_s", "end_s", "velocity")


def csv_text(result: Transcription) -> str:
    """One row per note: track name, MIDI pitch, start and end in seconds, velocity 1..127."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for t in result.tracks:
        for n in t.notes:
            w.writerow([t.name, n.pitch, f"{n.start:.6f}", f"{n.end:.6f}", n.velocity])
    return out.getvalue()
