"""The result of a transcription: tracks of notes, and its JSON form (stdlib only, runs in Pyodide).

JSON (times in seconds):
{"version": 1, "model": str, "sample_rate": int, "duration": float,
 "tracks": [{"name": str, "notes": [{"pitch": int, "start": float, "end": float, "velocity": int}]}]}
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

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
