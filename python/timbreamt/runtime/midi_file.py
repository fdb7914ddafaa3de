"""Reading MIDI files into note arrays (training data from users' MIDI files, reference notes for
evaluation)."""
from __future__ import annotations

from pathlib import Path

import mido
import numpy as np

from ..core.errors import DataError


def midi_parts(path: str | Path, skip_drums: bool = True) -> list:
    """Notes of a MIDI file, one numpy array (n, 3) of (start_s, end_s, pitch) per track with notes.

    Tempo changes from any track apply to all (as in a type-1 file); notes on the drum channel (10)
    are skipped unless ``skip_drums`` is False. Raises DataError naming the file when it cannot be read.
    """
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
