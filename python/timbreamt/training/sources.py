"""Timbre sources of the data generator, and which of them training may use.

Training: the two GM soundfonts of v0.5.0 (constants.TRAIN_SOUNDFONTS) and the procedural families
TRAIN_SYNTH_FAMILIES (training/synth.py). Out of distribution (validation, model selection, threshold
calibration and the OOD split of ``timbreamt eval``; never a gradient): the OPL3 FM bank (Debian
``opl3-soundfont``, new on every program by ../shared/ENVIRONMENT.md's measurement) and the FM synthesis
family, so FM timbres as a whole are unheard in training. Reserved for the project's independent checks and
refused here whatever the caller asks: TimGM6mb and the csound GM bank.
"""
from __future__ import annotations

import os

from ..core import constants as C
from ..core.errors import DataError
from .synth import FAMILIES

TRAIN_SYNTH_FAMILIES = ("additive", "pluck", "bowed", "blown")
OOD_SYNTH_FAMILIES = ("fm",)
OOD_SOUNDFONTS = ("/usr/share/sounds/sf2/OPL-3_FM_128M.sf2",)
OOD_APT_PACKAGE = "opl3-soundfont=1.0-4"
RESERVED_SOUNDFONT_MARKERS = ("timgm6mb", "csound")      # file names containing these are never loaded
# programs column of a synthesised part: SYNTH_PROGRAM_BASE + its family's index in synth.FAMILIES
# (not a GM program: fluidsynth never renders these)
SYNTH_PROGRAM_BASE = 1000

assert not set(TRAIN_SYNTH_FAMILIES) & set(OOD_SYNTH_FAMILIES)
assert set(TRAIN_SYNTH_FAMILIES) | set(OOD_SYNTH_FAMILIES) == set(FAMILIES)
assert not set(OOD_SOUNDFONTS) & set(C.TRAIN_SOUNDFONTS)


def check_not_reserved(path: str) -> None:
    """DataError when ``path`` is one of the soundfonts kept for independent checks."""
    name = os.path.basename(path).lower()
    if any(marker in name for marker in RESERVED_SOUNDFONT_MARKERS):
        raise DataError(f"{path} is reserved for independent checks: never train, tune or select on it")


def check_ood_sources() -> None:
    """DataError naming what is missing for the out-of-distribution split."""
    for path in OOD_SOUNDFONTS:
        check_not_reserved(path)
        if not os.path.isfile(path):
            raise DataError(f"soundfont not found: {path} (apt-get install {OOD_APT_PACKAGE})")


def synth_program(family: str) -> int:
    return SYNTH_PROGRAM_BASE + FAMILIES.index(family)
