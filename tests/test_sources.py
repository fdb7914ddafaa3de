"""Timbre sources of the data generator: procedural clips, the out-of-distribution split, reserved banks."""
import numpy as np
import pytest

from timbreamt.core import constants as C
from timbreamt.core.errors import DataError
from timbreamt.training import sources as SRC
from timbreamt.training.synth import FAMILIES


def test_training_and_out_of_distribution_sources_never_meet():
    assert not set(SRC.TRAIN_SYNTH_FAMILIES) & set(SRC.OOD_SYNTH_FAMILIES)
    assert set(SRC.TRAIN_SYNTH_FAMILIES) | set(SRC.OOD_SYNTH_FAMILIES) == set(FAMILIES)
    assert not set(SRC.OOD_SOUNDFONTS) & set(C.TRAIN_SOUNDFONTS)
    for path in ("/usr/share/sounds/sf2/TimGM6mb.sf2", "/usr/share/sounds/sf2/csound-GM.sf2", "x/TIMGM6MB.SF2"):
        with pytest.raises(DataError, match="reserved for independent checks"):
            SRC.check_not_reserved(path)
    SRC.check_not_reserved(C.TRAIN_SOUNDFONTS[0])
    for path in SRC.OOD_SOUNDFONTS:
        SRC.check_not_reserved(path)


def test_procedural_clips_are_labelled_deterministic_and_leave_old_sets_unchanged():
    pytest.importorskip("fluidsynth")
    from timbreamt.training.data import Renderer, make_clip, piano_rolls

    r = Renderer()
    a = make_clip(5, 2, renderer=r, corpus_fraction=0.0, synth_fraction=1.0)
    b = make_clip(5, 2, renderer=r, corpus_fraction=0.0, synth_fraction=1.0)
    np.testing.assert_array_equal(a["audio"], b["audio"])               # no dither: bit-identical
    np.testing.assert_array_equal(a["notes"], b["notes"])
    assert int(a["soundfont"]) == -1
    assert set(a["programs"].tolist()) <= {SRC.synth_program(f) for f in SRC.TRAIN_SYNTH_FAMILIES}
    notes = a["notes"]
    assert len(notes) and notes[:, 0].min() >= C.MIDI_MIN and notes[:, 0].max() <= C.MIDI_MAX
    assert notes[:, 2].max() <= 10.0 and np.all(notes[:, 2] > notes[:, 1])
    assert notes[:, 3].max() < len(a["programs"])
    audio = a["audio"].astype(np.float32)
    assert 0.05 < np.abs(audio).max() <= 1.0
    # where the labels say nothing sounds, the clip is (near) silent; where they say notes sound, it is not
    frames = piano_rolls(notes, (len(audio) - 1) // C.HOP + 1)["frame"].any(axis=0)
    energy = np.array([np.mean(audio[i * C.HOP:(i + 1) * C.HOP] ** 2) for i in range(len(frames))])
    silent = ~np.convolve(frames, np.ones(60), mode="same").astype(bool)    # 0.35 s from any note
    if silent.any():
        assert energy[silent].max() < 1e-3 * energy[frames].max()
    assert np.median(energy[frames]) > 1e-4 * energy[frames].max()
    # zero shares draw nothing: the clip made without the new options is the clip made before them
    old = make_clip(5, 3, renderer=r, corpus_fraction=0.0)
    zero = make_clip(5, 3, renderer=r, corpus_fraction=0.0, synth_fraction=0.0, room_prob=0.0)
    np.testing.assert_array_equal(old["notes"], zero["notes"])
    np.testing.assert_array_equal(old["programs"], zero["programs"])


def test_out_of_distribution_clips_use_only_reserved_sources(tmp_path):
    pytest.importorskip("fluidsynth")
    try:
        SRC.check_ood_sources()
    except DataError as exc:
        pytest.skip(str(exc))
    from timbreamt.training.data import generate, make_clip, make_eval_clip

    seen = set()
    for i in range(6):
        clip = make_clip(9, i, split="val", ood=True)
        progs = clip["programs"].tolist()
        if int(clip["soundfont"]) == -1:
            assert set(progs) == {SRC.synth_program("fm")}
            seen.add("fm")
        else:
            assert set(progs) <= set(C.TRAIN_PROGRAMS + C.HELDOUT_PROGRAMS)
            seen.add("opl3")
    assert seen == {"fm", "opl3"}
    with pytest.raises(DataError, match="--split val only"):
        generate(tmp_path / "x", 0.01, split="train", workers=1, progress=False, ood=True)
    piano = make_eval_clip(0, "solo piano", 1, ood=True)
    assert piano["programs"].tolist() == [0] and int(piano["soundfont"]) == 0
    mix = make_eval_clip(21, "2 instruments", 2, ood=True)
    in_dist_notes = make_eval_clip(21, "2 instruments", 2)["notes"]
    assert len(mix["notes"]) != len(in_dist_notes) or not np.array_equal(mix["notes"], in_dist_notes)
    assert (int(mix["soundfont"]) == -1) == (21 % 2 == 1)


def test_full_augmentation_is_a_training_option(tmp_path):
    pytest.importorskip("torch")
    from timbreamt.training.train import ClipSampler

    t = np.arange(int(3 * C.SAMPLE_RATE)) / C.SAMPLE_RATE
    for i in range(2):
        audio = (0.3 * np.sin(2 * np.pi * 220 * t) * (t > 0.5)).astype(np.float16)
        np.savez(tmp_path / f"clip_{i:06d}.npz", audio=audio, notes=np.array([[57, 0.5, 3.0, 0]], np.float32),
                 programs=np.array([0], np.int16), soundfont=np.int16(0))
    with pytest.raises(DataError, match="--augment must be one of basic, full, got 'loud'"):
        ClipSampler(tmp_path, 2.0, np.random.default_rng(0), augment_mode="loud")
    basic = ClipSampler(tmp_path, 2.0, np.random.default_rng(0)).batch(8, 0.0)
    full = ClipSampler(tmp_path, 2.0, np.random.default_rng(0), augment_mode="full").batch(8, 0.0)
    assert full["audio"].shape == basic["audio"].shape and bool(full["audio"].isfinite().all())
    assert not np.allclose(full["audio"].numpy(), basic["audio"].numpy())       # something was applied
    # the first crop is drawn before any augmentation: same labels, augmented audio only
    np.testing.assert_array_equal(full["onset"][0].numpy(), basic["onset"][0].numpy())
