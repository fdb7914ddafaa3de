import numpy as np
import pytest

from timbreamt.core import constants as C
from timbreamt.training.data import piano_rolls, procedural_part, split_of


def test_piano_rolls_frames_onsets_and_parts():
    notes = np.array([[60, 0.0, 1.0, 0], [60, 0.5, 1.5, 1], [72, 1.0, 1.2, 1]], np.float32)
    r = piano_rolls(notes, 200)
    fps = C.FRAMES_PER_SECOND
    row = 60 - 24
    assert r["frame"][row, 0] == 1 and r["frame"][row, int(1.49 * fps)] == 1 and r["frame"][row, int(1.6 * fps)] == 0
    assert r["onset"][row, 0] == 1 and r["onset"][row, round(0.5 * fps)] == 1
    assert r["part"][row, 5] == 0 and r["part"][row, int(0.7 * fps)] == -2 and r["part"][row, int(1.3 * fps)] == 1
    assert r["part"][72 - 24, int(1.1 * fps)] == 1
    shifted = piano_rolls(notes, 100, offset_s=1.0)
    assert shifted["onset"][row].sum() == 0 and shifted["frame"][72 - 24, :10].sum() > 0


def test_procedural_parts_cover_range_with_chords():
    rng = np.random.default_rng(0)
    pitches, chords = [], 0
    for _ in range(60):
        part = procedural_part(rng, 10.0)
        pitches += part.notes[:, 0].tolist()
        starts = np.round(part.notes[:, 1], 1)
        chords += len(starts) - len(np.unique(starts))
        assert (part.notes[:, 2] > part.notes[:, 1]).all()
        assert ((part.notes[:, 0] >= C.MIDI_MIN) & (part.notes[:, 0] <= C.MIDI_MAX)).all()
    assert min(pitches) < 36 and max(pitches) > 95 and chords > 100


def test_restrikes_repeat_pitches_and_default_parts_are_unchanged():
    from timbreamt.training.data import without_overlaps

    def repeated_onsets(part) -> int:
        """Onsets whose pitch set equals the previous onset's (chords grouped at 50 ms)."""
        groups, last_t = [], -1.0
        for p, s, _ in sorted(part.notes.tolist(), key=lambda n: n[1]):
            if s - last_t > 0.05:
                groups.append(set())
                last_t = s
            groups[-1].add(int(p))
        return sum(a == b for a, b in zip(groups, groups[1:]))

    plain = [procedural_part(np.random.default_rng(i), 10.0) for i in range(40)]
    again = [procedural_part(np.random.default_rng(i), 10.0, restrike=0.0) for i in range(40)]
    assert all(np.array_equal(a.notes, b.notes) for a, b in zip(plain, again))
    struck = [without_overlaps(procedural_part(np.random.default_rng(i), 10.0, restrike=0.3)) for i in range(40)]
    n_plain = sum(repeated_onsets(p) for p in plain)
    n_struck = sum(repeated_onsets(p) for p in struck)
    assert n_struck > 5 * max(n_plain, 1)
    for part in struck:     # one key at a time: a note ends where the next of its pitch starts
        for pitch in np.unique(part.notes[:, 0]):
            same = part.notes[part.notes[:, 0] == pitch]
            same = same[np.argsort(same[:, 1])]
            assert (same[:-1, 2] <= same[1:, 1] + 1e-6).all()


def test_split_is_stable_and_about_ten_percent():
    keys = [f"bach/bwv{i}.mxl" for i in range(2000)]
    val = sum(split_of(k) == "val" for k in keys)
    assert 120 < val < 280
    assert split_of("bach/bwv1.mxl") == split_of("bach/bwv1.mxl")


def test_reserved_composers_never_listed():
    pytest.importorskip("music21")
    from timbreamt.training.data import TRAIN_COMPOSERS, corpus_paths

    assert not set(TRAIN_COMPOSERS) & set(C.RESERVED_COMPOSERS)
    paths = corpus_paths("train")[:5000] + corpus_paths("val")
    assert paths and not any(f"/{c}/" in p for p in paths for c in C.RESERVED_COMPOSERS)
    assert not set(corpus_paths("train")) & set(corpus_paths("val"))


def test_clip_synthesis_is_deterministic_and_labelled():
    pytest.importorskip("fluidsynth")
    from timbreamt.training.data import Renderer, make_clip

    r = Renderer()
    a = make_clip(7, 3, renderer=r, corpus_fraction=0.0)
    make_clip(7, 4, renderer=r, corpus_fraction=0.0)           # another clip in between
    b = make_clip(7, 3, renderer=r, corpus_fraction=0.0)
    assert np.array_equal(a["notes"], b["notes"]) and np.array_equal(a["programs"], b["programs"])
    # the same audio up to fluidsynth's int16 dither (which it does not let us seed)
    x, y = a["audio"].astype(np.float32), b["audio"].astype(np.float32)
    assert np.corrcoef(x, y)[0, 1] > 0.9999 and np.abs(x - y).mean() < 1e-3 * np.abs(x).mean() * 10
    assert a["audio"].dtype == np.float16 and len(a["audio"]) == int(10 * C.SAMPLE_RATE)
    assert 0.05 < np.abs(a["audio"].astype(np.float32)).max() <= 1.0
    assert set(a["programs"].tolist()) <= set(C.TRAIN_PROGRAMS)
    assert not set(a["programs"].tolist()) & set(C.HELDOUT_PROGRAMS)
    assert a["notes"][:, 3].max() < len(a["programs"])


def test_missing_soundfont_and_empty_data_dir(tmp_path):
    from timbreamt.training.data import check_synthesis, list_clips
    from timbreamt.core.errors import DataError

    with pytest.raises(DataError, match="soundfont not found"):
        check_synthesis((str(tmp_path / "none.sf2"),))
    with pytest.raises(DataError, match="no clips"):
        list_clips(tmp_path)
    with pytest.raises(DataError, match="not found"):
        list_clips(tmp_path / "nope")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    pytest.importorskip("torch")
    from timbreamt.core.errors import DataError
    from timbreamt.training.checkpoints import load_checkpoint

    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="corrupt checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(DataError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_teacher_must_be_a_basicamt_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    from timbreamt.core.errors import DataError
    from timbreamt.training.models import Septimbre, build_model
    from timbreamt.training.checkpoints import model_from_checkpoint

    sept = tmp_path / "septimbre.pt"
    torch.save({"model": build_model("septimbre").state_dict(), "config": {"model": "septimbre"}}, sept)
    assert isinstance(model_from_checkpoint(sept), Septimbre)     # any model loads without the check
    with pytest.raises(DataError, match="is not a BasicAMT checkpoint"):
        model_from_checkpoint(sept, basicamt_only=True)


def test_train_cli_checkpoints_resumes_and_exports(tmp_path):
    """A tiny real run through the CLI: data -> train -> resume -> export (all checks)."""
    pytest.importorskip("fluidsynth")
    import json
    import subprocess
    import sys

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "timbreamt", *map(str, args)], capture_output=True, text=True)

    data = tmp_path / "data"
    r = cli("data", "--hours", 0.006, "--out", data, "--workers", 1, "--quiet")
    assert r.returncode == 0, r.stderr
    assert len(list(data.glob("clip_*.npz"))) == 2
    run = tmp_path / "run"
    common = ["--data", data, "--val", data, "--out", run, "--steps", 2, "--batch", 2, "--segment", 1, "--quiet"]
    r = cli("train", "basicamt", "--epochs", 1, *common)
    assert r.returncode == 0, r.stderr
    r = cli("train", "basicamt", "--epochs", 2, "--resume", *common)
    assert r.returncode == 0, r.stderr
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [rec["epoch"] for rec in log] == [1, 2] and "note_f1" in log[-1]
    # the grid holds the default thresholds, so its best can only be as good or better
    assert all(rec["note_f1_calibrated"] >= rec["note_f1"] for rec in log)
    r = cli("export", run, "--out", tmp_path / "models")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "models" / "basicamt.onnx").is_file()
    from timbreamt.core.graph_metadata import read_metadata
    meta = read_metadata((tmp_path / "models" / "basicamt.onnx").read_bytes())
    assert meta["conv2_rank"] == "0" and meta["conv_kernel"] == "5" and meta["neck_bins"] == "252"
    assert meta["neck_kernel"] == "5"
    assert meta["conv2_order"] == "freq-first"
    r = cli("train", "basicamt", "--epochs", 3, "--conv2-time-first", *common)
    assert r.returncode == 2 and "conv2_time_first needs a low-rank conv2" in r.stderr and "Traceback" not in r.stderr
    for flag in (["--conv-kernel", 3], ["--neck-kernel", 3], ["--neck-bins", 84]):
        r = cli("train", "basicamt", "--epochs", 3, "--resume", *flag, *common)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        assert "has --conv2-rank 0 --conv-kernel 5 --neck-kernel 5 --neck-bins 252; resume it with the same" in r.stderr
    # the run had no teacher: resuming it distilled is refused (its loss would change mid-run)
    r = cli("train", "basicamt", "--epochs", 3, "--resume", "--teacher", run, *common)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert "was trained with no --teacher; resume it with the same" in r.stderr
    # a time-first, one-row-per-pitch branch fine-tuned from the run: its graph passes the exporter's checks
    pitches = tmp_path / "pitches"
    # ... distilled from that run (the teacher a 252-row, full-conv2 branch)
    r = cli("train", "basicamt", "--epochs", 1, "--init-from", run, "--conv2-rank", 8, "--conv2-time-first",
            "--neck-bins", 84, "--teacher", run, "--distill", 0.5, *[a if a != run else pitches for a in common])
    assert r.returncode == 0, r.stderr
    assert "conv2 re-factorised time first" in r.stdout and "neck and heads folded to 84 rows" in r.stdout
    assert f"distilling from {run} (" in r.stdout and "weight 0.5" in r.stdout
    r = cli("export", pitches, "--out", tmp_path / "pitch_models")
    assert r.returncode == 0, r.stderr
    meta = read_metadata((tmp_path / "pitch_models" / "basicamt.onnx").read_bytes())
    assert meta["conv2_rank"] == "8" and meta["neck_bins"] == "84" and meta["conv2_order"] == "time-first"
    for bad, message in ((["septimbre", "--init-from", run, "--teacher", run], "they train basicamt only"),
                         (["basicamt", "--teacher", run, "--distill", 0],
                          "--distill must be a finite number > 0, got 0.0"),
                         (["basicamt", "--teacher", run, "--distill", "inf"],
                          "--distill must be a finite number > 0, got inf"),
                         (["basicamt", "--teacher", tmp_path / "no_run"], "checkpoint not found")):
        r = cli("train", *bad, "--epochs", 1, *[a if a != run else tmp_path / "unused" for a in common])
        assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = cli("train", "basicamt", "--epochs", 1, "--data", tmp_path / "nothing", "--out", run)
    assert r.returncode != 0 and "data folder not found" in r.stderr and "Traceback" not in r.stderr
    (run / "last.pt").write_bytes(b"broken")
    r = cli("train", "basicamt", "--epochs", 3, "--resume", *common)
    assert r.returncode != 0 and "corrupt checkpoint" in r.stderr and "Traceback" not in r.stderr


def test_eval_plan_has_40_plus_clips_of_1_to_4_instruments():
    from timbreamt.training.data import EVAL_CLIP_SECONDS, eval_plan, eval_plan_first

    plan = eval_plan()
    assert len(plan) >= 40 and EVAL_CLIP_SECONDS >= 30
    assert [i for i, _, _ in plan] == list(range(len(plan)))
    assert {n for _, _, n in plan} == {1, 2, 3, 4}
    assert eval_plan_first("2 instruments") == next(i for i, c, _ in plan if c == "2 instruments")
    with pytest.raises(ValueError, match="unknown evaluation category"):
        eval_plan_first("kazoo band")


def test_without_overlaps_ends_a_note_where_its_pitch_restarts():
    from timbreamt.training.data import Part, without_overlaps

    notes = np.array([[60, 0.0, 1.0], [60, 0.5, 1.5], [64, 0.2, 0.9], [60, 2.0, 2.01]], dtype=np.float32)
    part = without_overlaps(Part(notes, np.array([80, 90, 70, 60], np.int16), [], [], []))
    np.testing.assert_allclose(part.notes, [[60, 0.0, 0.5], [64, 0.2, 0.9], [60, 0.5, 1.5]])   # 10 ms note dropped
    assert part.velocities.tolist() == [80, 70, 90]


def test_eval_clips_use_held_out_programs_unheard_music_and_are_deterministic():
    pytest.importorskip("fluidsynth")
    from timbreamt.training.data import EVAL_CLIP_SECONDS, MIN_PART_NOTES, Renderer, eval_plan, make_eval_clip

    renderer = Renderer()
    index, category, n = next(row for row in eval_plan() if row[2] == 3)
    a = make_eval_clip(index, category, n, renderer)
    b = make_eval_clip(index, category, n, renderer)
    assert len(a["audio"]) == int(EVAL_CLIP_SECONDS * C.SAMPLE_RATE)
    assert set(a["programs"].tolist()) <= set(C.HELDOUT_PROGRAMS) and len(set(a["programs"].tolist())) == 3
    assert not set(a["programs"].tolist()) & set(C.TRAIN_PROGRAMS)
    assert all((a["notes"][:, 3] == k).sum() >= MIN_PART_NOTES for k in range(3))
    np.testing.assert_array_equal(a["notes"], b["notes"])
    assert np.corrcoef(a["audio"], b["audio"])[0, 1] > 0.999
    piano = make_eval_clip(0, "solo piano", 1, renderer)
    assert piano["programs"].tolist() == [0] and str(piano["category"]) == "solo piano"


def test_eval_style_training_clips_use_training_programs_and_other_music(tmp_path):
    """--eval-style: clips of the evaluation's form for fitting (training programs and music of the chosen
    split, their own seed); the evaluation's own clips are unchanged; eval seeds and OOD training refused."""
    pytest.importorskip("fluidsynth")
    from timbreamt.core.errors import DataError
    from timbreamt.training.data import (EVAL_CLIP_SECONDS, EVAL_SEED, Renderer, eval_plan, generate_eval_style,
                                         make_eval_clip)

    renderer = Renderer()
    index, category, n = next(row for row in eval_plan() if row[2] == 2)
    default = make_eval_clip(index, category, n, renderer)
    explicit = make_eval_clip(index, category, n, renderer, seed=EVAL_SEED, split="val", programs=C.HELDOUT_PROGRAMS)
    np.testing.assert_array_equal(default["notes"], explicit["notes"])        # the evaluation's clips as before
    train = make_eval_clip(index, category, n, renderer, seed=21, split="train", programs=C.TRAIN_PROGRAMS)
    assert set(train["programs"].tolist()) <= set(C.TRAIN_PROGRAMS) and len(train["programs"]) == 2
    assert not np.array_equal(train["notes"], default["notes"])
    assert len(train["audio"]) == int(EVAL_CLIP_SECONDS * C.SAMPLE_RATE)
    notes = train["notes"]
    assert set(np.unique(notes[:, 3]).astype(int).tolist()) == {0, 1}           # both instruments play
    assert notes[:, 1].min() >= 0 and notes[:, 2].max() <= EVAL_CLIP_SECONDS + 1e-6
    with pytest.raises(DataError, match="evaluation set's"):
        generate_eval_style(tmp_path / "x", 0.01, seed=EVAL_SEED, progress=False)
    with pytest.raises(DataError, match="--split val only"):
        generate_eval_style(tmp_path / "x", 0.01, seed=3, split="train", ood=True, progress=False)


def _write_midi(path, notes, program=0, drums=()):
    import mido

    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500000))
    events = [(s, "note_on", p, 9 if p in drums else 0) for p, s, e in notes] + \
             [(e, "note_off", p, 9 if p in drums else 0) for p, s, e in notes]
    now = 0
    for t, kind, p, ch in sorted(events, key=lambda x: (x[0], x[1] == "note_on")):
        tick = int(round(t * 960))
        track.append(mido.Message(kind, note=p, velocity=80, channel=ch, time=tick - now))
        now = tick
    mid.save(str(path))


def test_user_midi_files_become_training_clips(tmp_path):
    pytest.importorskip("fluidsynth")
    from timbreamt.training.data import Renderer, list_midi_files, make_clip
    from timbreamt.runtime.midi_file import midi_parts

    folder = tmp_path / "midi"
    folder.mkdir()
    notes = [(60 + (i % 12), i * 0.25, i * 0.25 + 0.2) for i in range(120)]
    _write_midi(folder / "scale.mid", notes, drums=(36,))
    _write_midi(folder / "drums.MID", notes + [(36, 0.0, 0.1)], drums=(36,))
    (parts,) = midi_parts(folder / "drums.MID")
    assert 36 not in parts[:, 2] and len(parts) == 120        # drum-channel notes are not pitched notes
    assert parts[1, 0] == pytest.approx(0.25)
    files = tuple(list_midi_files(folder))
    assert len(files) == 2
    clip = make_clip(3, 0, renderer=Renderer(), midi_files=files, midi_fraction=1.0)
    assert len(clip["notes"]) > 10
    assert set(np.unique(clip["notes"][:, 0] % 12).tolist()) <= set(range(12))
    assert np.abs(clip["audio"].astype(np.float32)).max() > 0.05


def test_unreadable_midi_is_a_one_line_error(tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "midi"
    folder.mkdir()
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\xff\xff")
    out = subprocess.run([sys.executable, "-m", "timbreamt", "data", "--hours", "0.01", "--out",
                          str(tmp_path / "d"), "--midi", str(folder)], capture_output=True, text=True)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "cannot read MIDI file" in out.stderr and "broken.mid" in out.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    out = subprocess.run([sys.executable, "-m", "timbreamt", "data", "--hours", "0.01", "--out",
                          str(tmp_path / "d"), "--midi", str(empty)], capture_output=True, text=True)
    assert out.returncode != 0 and "no .mid or .midi files" in out.stderr


def test_dynamic_mixtures_combine_solo_clips_of_different_programs(tmp_path):
    torch = pytest.importorskip("torch")
    from timbreamt.training.train import ClipSampler

    sr = C.SAMPLE_RATE
    t = np.arange(int(10 * sr)) / sr
    for i, (program, pitch) in enumerate([(0, 60), (40, 72), (73, 48), (0, 55)]):
        audio = (0.5 * np.sin(2 * np.pi * 440 * 2 ** ((pitch - 69) / 12) * t)).astype(np.float16)
        notes = np.array([[pitch, 0.0, 10.0, 0]], dtype=np.float32)
        np.savez(tmp_path / f"clip_{i:06d}.npz", audio=audio, notes=notes, programs=np.array([program], np.int16),
                 soundfont=np.int16(0))
    np.savez(tmp_path / "clip_000009.npz", audio=np.zeros(int(10 * sr), np.float16),
             notes=np.array([[50, 0, 10, 0], [62, 0, 10, 1]], np.float32), programs=np.array([1, 2], np.int16),
             soundfont=np.int16(0))
    sampler = ClipSampler(tmp_path, 2.0, np.random.default_rng(0), multi_part_only=True, dynamic_mix=1.0)
    batch = sampler.batch(8, noise_prob=0.0)
    for b in range(8):
        labels = torch.unique(batch["part"][b][batch["part"][b] >= 0]).tolist()
        if batch["audio"][b].abs().max() < 1e-3:          # the 4% silent examples carry no notes
            assert labels == []
            continue
        assert 2 <= len(labels) <= 3                        # three distinct programs among the solo clips
        rows = {int(r) for r in torch.nonzero(batch["part"][b] >= 0)[:, 0]}
        assert rows <= {60 - 24, 72 - 24, 48 - 24, 55 - 24}  # only solo clips' pitches: the mixture clip is not used


def test_encoder_validation_scores_mixtures_only():
    torch = pytest.importorskip("torch")
    from timbreamt.training.models import build_model
    from timbreamt.training.train import validate_encoder

    sr = C.SAMPLE_RATE
    t = np.arange(int(3 * sr)) / sr
    # part 0: pure tones; part 1: bright square-ish tones, in turns
    audio = np.zeros_like(t)
    notes = []
    for i in range(6):
        a, b = int(i * 0.5 * sr), int((i * 0.5 + 0.4) * sr)
        f = 440 * 2 ** ((57 + i - 69) / 12)
        if i % 2:
            audio[a:b] = 0.3 * np.sign(np.sin(2 * np.pi * f * t[a:b]))
        else:
            audio[a:b] = 0.3 * np.sin(2 * np.pi * f * t[a:b])
        notes.append((57 + i, i * 0.5, i * 0.5 + 0.4, i % 2))
    mixture = {"audio": audio.astype(np.float16), "notes": np.array(notes, np.float32), "programs": np.array([0, 80])}
    solo = {**mixture, "programs": np.array([0])}
    model = build_model("septimbre")
    score = validate_encoder(model, [mixture, solo], torch.device("cpu"))["assignment_accuracy"]
    assert 0.5 <= score <= 1.0 and model.training            # a real model runs; it is back in training mode
    assert validate_encoder(model, [solo], torch.device("cpu")) == {"assignment_accuracy": 0.0}

    class Oracle(torch.nn.Module):
        """Embeddings that name the part sounding at each frame."""

        def forward(self, audio):
            frames = (audio.shape[-1] - 1) // C.HOP + 1
            emb = torch.zeros(1, 12, 84, frames)
            emb[:, 0] = 1.0
            for _, start, end, part in notes:
                if part == 1:
                    a, b = int(np.ceil(start * C.FRAMES_PER_SECOND)), int(np.ceil(end * C.FRAMES_PER_SECOND))
                    emb[:, 0, :, a:b], emb[:, 1, :, a:b] = 0.0, 1.0
            return {"embedding": emb, "frame": torch.ones(1, 84, frames)}

    assert validate_encoder(Oracle(), [mixture], torch.device("cpu"))["assignment_accuracy"] == 1.0


def test_clip_that_cannot_be_written_gives_a_clear_error(tmp_path):
    pytest.importorskip("fluidsynth")
    from timbreamt.training.data import _worker_make
    from timbreamt.core.errors import DataError

    gone = tmp_path / "removed-while-rendering"
    with pytest.raises(DataError, match="cannot write .*clip_000000.npz"):
        _worker_make((0, 0, "train", str(gone), {"corpus_fraction": 0.0}))


def test_a_data_set_refuses_other_settings_and_files_that_are_not_clips(tmp_path):
    from timbreamt.core.errors import DataError
    from timbreamt.training.data import check_same_settings, load_clip, read_set_meta, write_set_meta

    meta = {"seed": 0, "split": "train", "programs": [0, 40], "midi_files": [], "midi_fraction": 0.5,
            "synth_fraction": 0.0, "room_prob": 0.0, "ood": False, "clips": 3}
    write_set_meta(tmp_path / "meta.json", meta)
    assert read_set_meta(tmp_path / "meta.json") == meta and not (tmp_path / "meta.json.tmp").exists()
    check_same_settings(tmp_path, {**meta, "clips": 9})         # more clips of the same set: fine
    with pytest.raises(DataError, match=r"other settings \(seed 0, not 5\): render into a new folder"):
        check_same_settings(tmp_path, {**meta, "seed": 5})
    (tmp_path / "meta.json").write_text('{"seed": 0, "spl')       # cut short
    with pytest.raises(DataError, match="unreadable .*meta.json"):
        check_same_settings(tmp_path, meta)
    np.savez(tmp_path / "clip_000000.npz", x=np.zeros(3))
    with pytest.raises(DataError, match=r"is not a clip of `timbreamt data` \(no audio, notes, programs\)"):
        load_clip(tmp_path / "clip_000000.npz")
