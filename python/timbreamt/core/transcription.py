"""The result of a transcription: tracks of notes, its JSON form, and bridges to other tools
(a MIDI file, pretty_midi, mir_eval's arrays). The standard library and numpy only: runs in Pyodide.

JSON (times in seconds):
{"version": 1, "model": str, "sample_rate": int, "duration": float,
 "tracks": [{"name": str, "notes": [{"pitch": int, "start": float, "end": float, "velocity": int}]}]}
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

JSON_VERSION = 1


@dataclass(frozen=True)
class Note:
    pitch: int          # MIDI note number
    start: float        # seconds
    end: float          # seconds, > start
    velocity: int       # 1..127


@dataclass
class Track:
    name: str
    notes: list[Note] = field(default_factory=list)


@dataclass
class Transcription:
    model: str
    sample_rate: int
    duration: float
    tracks: list[Track]
    warnings: list[str] = field(default_factory=list)   # not part of the JSON: printed by the CLI

    @property
    def n_notes(self) -> int:
        return sum(len(t.notes) for t in self.tracks)

    def to_dict(self) -> dict:
        return {
            "version": JSON_VERSION, "model": self.model, "sample_rate": int(self.sample_rate),
            "duration": round(float(self.duration), 6),
            "tracks": [{"name": t.name, "notes": [
                {"pitch": int(n.pitch), "start": round(float(n.start), 6), "end": round(float(n.end), 6),
                 "velocity": int(n.velocity)} for n in t.notes]} for t in self.tracks],
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict) -> "Transcription":
        """Parse the JSON form; ValueError naming the first problem."""
        if not isinstance(d, dict) or d.get("version") != JSON_VERSION:
            raise ValueError(f"not a timbreamt transcription of version {JSON_VERSION}")
        try:
            tracks = [Track(str(t["name"]), [Note(int(n["pitch"]), float(n["start"]), float(n["end"]),
                                                  int(n["velocity"])) for n in t["notes"]]) for t in d["tracks"]]
            return cls(str(d["model"]), int(d["sample_rate"]), float(d["duration"]), tracks)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed transcription JSON: missing or bad field {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> "Transcription":
        return cls.from_dict(json.loads(text))

    def to_midi_bytes(self) -> bytes:
        """A type-1 Standard MIDI File: one named track per instrument, each on its own channel."""
        from .midi import midi_bytes

        return midi_bytes(self)

    def to_midi(self, path: str | os.PathLike) -> None:
        """Write the MIDI file (``to_midi_bytes``) to ``path`` (replaced if it exists). For several
        formats written as a set, use timbreamt.runtime.outputs.write_outputs."""
        with open(path, "wb") as f:
            f.write(self.to_midi_bytes())

    def to_pretty_midi(self) -> Any:
        """A ``pretty_midi.PrettyMIDI`` with one instrument per track (named as the track), notes in
        seconds. Needs pretty_midi, which timbreamt does not depend on (ImportError saying so)."""
        try:
            # an optional bridge, imported on demand (tests/test_layout.py allows it here, nowhere at import)
            import pretty_midi
        except ImportError as exc:
            raise ImportError("Transcription.to_pretty_midi needs pretty_midi: pip install pretty_midi "
                              "(or use to_midi(path) / to_mir_eval(), which need nothing more)") from exc
        pm = pretty_midi.PrettyMIDI()
        for t in self.tracks:
            inst = pretty_midi.Instrument(program=0, name=t.name)
            inst.notes = [pretty_midi.Note(velocity=int(n.velocity), pitch=int(n.pitch), start=float(n.start),
                                           end=float(n.end)) for n in t.notes]
            pm.instruments.append(inst)
        return pm

    def to_mir_eval(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per track, the arrays mir_eval.transcription takes: (intervals (n, 2) float64 onset/offset in
        seconds, pitches (n,) float64 in Hz), notes in time order. Merge tracks with np.concatenate
        to score the notes regardless of instrument."""
        out = []
        for t in self.tracks:
            notes = sorted(t.notes, key=lambda n: (n.start, n.pitch))
            intervals = np.array([[n.start, n.end] for n in notes], dtype=np.float64).reshape(-1, 2)
            pitches = 440.0 * 2.0 ** ((np.array([n.pitch for n in notes], dtype=np.float64) - 69.0) / 12.0)
            out.append((intervals, pitches))
        return out
