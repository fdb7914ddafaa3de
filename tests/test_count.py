"""The instrument-count estimator of --instruments auto: features, the model's format, fitting, and its
path from a graph's metadata to the tracks of the CLI and the page."""
import json
import shutil

import numpy as np
import pytest

from conftest import REFERENCE
from timbreamt.core import count
from timbreamt.core.contract import decode_options
from timbreamt.core.errors import ModelError
from timbreamt.core.pipeline import assign_tracks
from timbreamt.core.notes import NOTE_DTYPE

F = len(count.DEFAULT_FEATURES)          # the features of models fitted with fit-count's default


def timbres(k, dim=12, seed=0):
    rng = np.random.default_rng(seed)
    return np.linalg.qr(rng.standard_normal((dim, dim)))[0][:k]


def parts(k, notes_per_part=20, note_frames=10, seed=0):
    """k monophonic parts playing at once, each with its own timbre: starts, ends, embeddings."""
    rng = np.random.default_rng(seed)
    centres = timbres(k, seed=seed)
    starts, ends, emb = [], [], []
    for part in range(k):
        s = np.arange(notes_per_part) * note_frames + part            # one note after another
        starts.append(s)
        ends.append(s + note_frames - 1)
        e = centres[part] + 0.1 * rng.standard_normal((notes_per_part, 12))
        emb.append(e / np.linalg.norm(e, axis=1, keepdims=True))
    return np.concatenate(starts), np.concatenate(ends), np.concatenate(emb)


def always(n, classes=(1, 2, 3, 4)):
    """A count model that answers n whatever it is shown."""
    bias = np.where(np.array(classes) == n, 10.0, 0.0)
    return count.CountModel(tuple(classes), np.zeros(F), np.ones(F), np.zeros((F, len(classes))), bias)


def test_features_see_polyphony_and_overlap_within_timbre_groups():
    solo = count.count_features(*parts(1))
    quartet = count.count_features(*parts(4))
    names = count.DEFAULT_FEATURES
    get = lambda f, name: f[names.index(name)]                      # noqa: E731
    assert get(solo, "polyphony>=2") == 0.0 and get(solo, "mean polyphony") == 1.0
    assert get(quartet, "polyphony>=4") > 0.5 and get(quartet, "polyphony q0.9") == 4.0
    # four monophonic timbres: split in 4 no group overlaps itself, split in 2 every group does
    assert get(quartet, "overlap within 4 groups") == 0.0
    assert get(quartet, "overlap within 2 groups") > 0.5
    # four timbres: four leading eigenvalues near 1, then a gap; one timbre: no second one
    assert get(quartet, "eigenvalue 4") > 0.8 > 0.2 > get(quartet, "eigenvalue 5")
    assert get(solo, "eigenvalue 2") < 0.2
    assert solo.shape == quartet.shape == (F,) and np.all(np.isfinite(quartet))


def test_features_of_long_clips_use_every_note_for_the_groups():
    starts, ends, emb = parts(4, notes_per_part=400)                  # 1,600 notes: a subset for the spectrum
    f = count.count_features(starts, ends, emb)
    assert f[count.DEFAULT_FEATURES.index("overlap within 4 groups")] == 0.0


def chords(sizes, gap=20, spread=0):
    """Onsets of chords of ``sizes`` notes, one chord every ``gap`` frames, the notes of a chord starting
    ``spread`` frames apart (a strum): starts, ends, embeddings of one timbre."""
    starts = np.concatenate([i * gap + spread * np.arange(n) for i, n in enumerate(sizes)])
    emb = np.tile(timbres(1)[0], (len(starts), 1))
    return starts, starts + gap - 1, emb


def test_simultaneous_onsets_tell_chords_from_a_melody():
    name = "simultaneous onsets>=2"
    share = lambda *notes: count.count_features(*notes, names=(name,))[0]      # noqa: E731
    assert share(*chords([1] * 10)) == 0.0                  # one note at a time
    assert share(*chords([3] * 10)) == 1.0                  # every onset a chord
    assert share(*chords([1, 2] * 5)) == 0.5
    # a strum within ONSET_GROUP_FRAMES is one chord; notes further apart are not
    assert share(*chords([3] * 10, spread=count.ONSET_GROUP_FRAMES)) == 1.0
    assert share(*chords([3] * 10, spread=count.ONSET_GROUP_FRAMES + 1)) == 0.0


def test_features_come_in_the_order_asked():
    notes = parts(3)
    every = count.count_features(*notes, names=count.FEATURE_NAMES)
    assert np.array_equal(every[:F], count.count_features(*notes))             # the default is a prefix
    picked = ("simultaneous onsets>=2", "eigenvalue 3", "polyphony>=2")
    assert np.array_equal(count.count_features(*notes, names=picked),
                          every[[count.FEATURE_NAMES.index(n) for n in picked]])
    with pytest.raises(ValueError, match="unknown count feature"):
        count.count_features(*notes, names=("loudness",))


@pytest.mark.parametrize("args, message", [
    ((np.array([0, 1]), np.array([2, 3]), np.ones((2, 12))), "at least 3 notes"),
    ((np.array([0, 1, 2]), np.array([2, 3]), np.ones((3, 12))), "must agree"),
    ((np.array([0, 1, 5]), np.array([2, 3, 5]), np.ones((3, 12))), "0 <= start < end"),
])
def test_features_refuse_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        count.count_features(*args)


def test_model_json_round_trip_and_checks():
    rng = np.random.default_rng(1)
    model = count.CountModel((1, 2, 3), rng.standard_normal(F), rng.random(F) + 0.5,
                             rng.standard_normal((F, 3)), rng.standard_normal(3))
    back = count.CountModel.from_json(model.to_json())
    x = rng.standard_normal(F)
    assert back.predict(x) == model.predict(x) and back.classes == (1, 2, 3)
    d = json.loads(model.to_json())
    for change, message in [({"weights": [[0.0] * 3] * (F - 1)}, "weights has shape"),
                            ({"features": ["x"] * F}, "other features"),
                            ({"features": list(count.DEFAULT_FEATURES[:-1]) + ["polyphony>=2"]}, "repeated"),
                            ({"classes": [0, 1, 2]}, "counts >= 1"),
                            ({"scale": [0.0] * F}, "scale <= 0"),
                            ({"bias": [float("nan")] * 3}, "non-finite")]:
        with pytest.raises(ValueError, match=message):
            count.CountModel.from_json(json.dumps({**d, **change}))
    with pytest.raises(ValueError, match="not a readable count model"):
        count.CountModel.from_json("{")


def test_a_model_reads_the_features_it_names():
    """A model fitted on other features than the default: the runtime computes the ones it names (here
    only the share of simultaneous onsets: melody -> 1, chords -> 3), and its JSON says which."""
    name = "simultaneous onsets>=2"
    model = count.CountModel((1, 3), np.array([0.5]), np.array([0.25]), np.array([[-4.0, 4.0]]), np.zeros(2),
                             (name,))
    back = count.CountModel.from_json(model.to_json())
    assert back.feature_names == (name,) and json.loads(model.to_json())["features"] == [name]
    assert count.estimate_count(*chords([1] * 20), back) == 1
    assert count.estimate_count(*chords([3] * 20), back) == 3
    d = json.loads(model.to_json())
    with pytest.raises(ValueError, match="other features than this version computes .*loudness"):
        count.CountModel.from_json(json.dumps({**d, "features": ["loudness"]}))


def test_graph_metadata_carries_the_model_to_the_decoding_options():
    model = always(3)
    opts = decode_options({"count_model": model.to_json()}, has_embedding=True)
    assert opts.count_model is not None and opts.count_model.predict(np.zeros(F)) == 3
    assert decode_options({}, has_embedding=True).count_model is None                 # old graphs: eigengap
    assert decode_options({"count_model": model.to_json()}, has_embedding=False).count_model is None
    with pytest.raises(ModelError, match="count_model"):
        decode_options({"count_model": "[1, 2]"}, has_embedding=True)


def test_auto_uses_the_model_and_falls_back_to_the_eigengap():
    starts, ends, emb = parts(2)
    events = np.zeros(len(starts), dtype=NOTE_DTYPE)
    events["start"], events["end"], events["pitch"] = starts, ends, 60
    labels, k, _ = assign_tracks(events, emb, "auto", always(3))
    assert k == 3 and set(labels.tolist()) == {0, 1, 2}
    _, k_eigengap, _ = assign_tracks(events, emb, "auto", None)
    assert k_eigengap == 2
    _, k_given, _ = assign_tracks(events, emb, 4, always(3))          # a given N is never overridden
    assert k_given == 4
    assert assign_tracks(events[:2], emb[:2], "auto", always(3))[1] == 1    # too few notes to count


def test_fit_recovers_counts_and_balances_them():
    from timbreamt.training.count import balanced_accuracy, fit_count_model, predict_all

    rng = np.random.default_rng(2)
    counts = np.repeat([1, 2, 3, 4], [200, 20, 20, 60])                  # unbalanced, like the renders
    x = rng.standard_normal((len(counts), F)) * 0.3
    x[:, 0] += counts                                                     # one feature tells the count
    model = fit_count_model(x, counts, l2=1e-2)
    assert model.classes == (1, 2, 3, 4)
    assert balanced_accuracy(predict_all(model, x), counts) > 0.95
    again = fit_count_model(x, counts, l2=1e-2)
    assert np.array_equal(again.weights, model.weights)                   # deterministic
    with pytest.raises(ValueError, match="features must be"):
        fit_count_model(x[:, :3], counts, 1e-2)
    # on a named subset: the model names it and reads it at run time
    names = ("simultaneous onsets>=2", "polyphony>=2")
    sub = fit_count_model(x[:, :2], counts, 1e-2, names)
    assert sub.feature_names == names and sub.weights.shape == (2, 4)
    assert balanced_accuracy(predict_all(sub, x[:, :2]), counts) > 0.95
    with pytest.raises(ValueError, match="other features"):
        fit_count_model(x[:, :2], counts, 1e-2, ("simultaneous onsets>=2", "loudness"))


def test_fit_graph_count_keeps_the_regularisation_its_selection_prefers(monkeypatch, tmp_path):
    """fit_graph_count on given clip features (no transcription): the kept L2 is the one whose validation
    score (balanced accuracy or accuracy, as asked) is best over the grid, on the features asked for."""
    from timbreamt.training import count as fit

    rng = np.random.default_rng(8)          # data on which the two selections keep different strengths

    def clips(n_per_count, noise):
        counts = np.repeat([1, 2, 3, 4], n_per_count)
        x = rng.standard_normal((len(counts), len(count.FEATURE_NAMES))) * noise
        x[:, count.FEATURE_NAMES.index("simultaneous onsets>=2")] += counts
        x[:, 0] += 0.5 * counts
        return fit.ClipFeatures(x, np.arange(len(counts)), counts, np.ones(len(counts), np.int64))

    sets = {"train": clips([40, 10, 10, 30], 1.0), "val": clips([30, 5, 5, 20], 1.5)}
    monkeypatch.setattr(fit, "clip_features", lambda graph, dirs, threads: sets[dirs[0]])
    written = {}
    monkeypatch.setattr(fit, "write_count_model", lambda graph, model: written.update(model=model))
    for features in ("all", "default"):
        names = fit.FEATURE_SETS[features]
        accuracy, balanced = {}, {}
        for l2 in fit.L2_GRID:
            p = sets["val"].predict(fit.fit_count_model(sets["train"].columns(names), sets["train"].piece_counts(),
                                                        l2, names))
            accuracy[l2], balanced[l2] = np.mean(p == sets["val"].counts), fit.balanced_accuracy(p, sets["val"].counts)
        kept = {}
        for select, key, scores in [("accuracy", "val_accuracy", accuracy), ("balanced", "val", balanced)]:
            figures = fit.fit_graph_count(tmp_path / "g.onnx", ["train"], ["val"], log=lambda *_: None,
                                          features=features, select=select)
            assert figures[key] == max(scores.values()) and scores[figures["l2"]] == figures[key]
            assert written["model"].feature_names == names and figures["features"] == features
            kept[select] = figures["l2"]
        assert kept["accuracy"] != kept["balanced"]
    with pytest.raises(ValueError, match="unknown feature set"):
        fit.fit_graph_count(tmp_path / "g.onnx", ["train"], ["val"], features="most")
    with pytest.raises(ValueError, match="unknown selection"):
        fit.fit_graph_count(tmp_path / "g.onnx", ["train"], ["val"], select="f1")


def test_fit_count_command_offers_the_feature_sets_and_selections_fitting_knows():
    import argparse

    from timbreamt.cli import count as cli
    from timbreamt.training.count import FEATURE_SETS, SELECTION

    sub = argparse.ArgumentParser().add_subparsers()
    cli.register(sub)
    actions = {a.dest: a for a in sub.choices["fit-count"]._actions}
    assert tuple(actions["features"].choices) == tuple(FEATURE_SETS) and actions["features"].default == "default"
    assert tuple(actions["select"].choices) == SELECTION and actions["select"].default == "balanced"


def test_a_graph_with_a_count_model_counts_with_it(tmp_path, shipped_models):
    """Written into a copy of the shipped graph, a model that always says 3 makes auto give 3 tracks
    through the runtime (the CLI's path), and the metadata reader the page uses sees it too."""
    pytest.importorskip("onnx")
    from timbreamt.core.graph_metadata import read_metadata
    from timbreamt.runtime.transcriber import Transcriber
    from timbreamt.training.count import write_count_model

    graph = tmp_path / "septimbre.onnx"
    shutil.copy(shipped_models / "septimbre.onnx", graph)
    before = read_metadata(graph.read_bytes())
    write_count_model(graph, always(3))
    after = read_metadata(graph.read_bytes())
    assert {k: v for k, v in after.items() if k != "count_model"} == \
        {k: v for k, v in before.items() if k != "count_model"}           # the rest of the metadata kept
    assert count.CountModel.from_json(after["count_model"]).predict(np.zeros(F)) == 3
    result = Transcriber(graph, threads=1).transcribe(REFERENCE / "three_mix.wav", instruments="auto")
    assert len(result.tracks) == 3
    write_count_model(graph, always(2))                                    # replaced, not added
    assert read_metadata(graph.read_bytes())["count_model"].count('"classes"') == 1
    assert len(Transcriber(graph, threads=1).transcribe(REFERENCE / "three_mix.wav", instruments="auto").tracks) == 2


def test_pieces_split_long_clips_and_the_votes_add_up():
    frames = count.COUNT_PIECE_FRAMES
    starts = np.concatenate([np.arange(0, 3 * frames, 7), [int(3.2 * frames)]])   # 3.2 pieces of notes
    groups = count.pieces(starts)
    assert len(groups) == 3                                   # the 0.2 tail joins the third piece
    assert np.array_equal(np.concatenate(groups), np.arange(len(starts)))
    assert count.pieces(np.array([0, 5])) == []               # too few notes to count
    # a model that prefers 2 on one piece and 3, more strongly, on another answers 3 for both together
    w = np.zeros((F, 2))
    w[0] = [1.0, -1.0]
    model = count.CountModel((2, 3), np.zeros(F), np.ones(F), w, np.zeros(2))
    a, b = np.zeros(F), np.zeros(F)
    a[0], b[0] = 1.0, -3.0
    assert model.vote([a]) == 2 and model.vote([b]) == 3 and model.vote([a, b]) == 3


def test_fit_count_command_writes_a_model_that_counts_its_clips(tmp_path, shipped_models):
    """`timbreamt fit-count` end to end on two clips (the bundled examples, 3 instruments and piano):
    the model is written into the graph, its figures are printed, and it counts both clips right."""
    pytest.importorskip("onnx")
    import subprocess
    import sys

    import soundfile as sf

    from timbreamt.core.constants import SAMPLE_RATE
    from timbreamt.core.graph_metadata import read_metadata
    from timbreamt.core.resample import resample

    clips = tmp_path / "clips"
    clips.mkdir()
    for i, (name, programs) in enumerate([("three_mix", [40, 71, 0]), ("piano_short", [0])]):
        audio, rate = sf.read(REFERENCE / f"{name}.wav", dtype="float32")
        mono = resample(audio.mean(axis=1), rate, SAMPLE_RATE).astype(np.float16)
        np.savez(clips / f"clip_{i:06d}.npz", audio=mono, notes=np.zeros((0, 4), np.float32),
                 programs=np.array(programs, np.int16))
    graph = tmp_path / "septimbre.onnx"
    shutil.copy(shipped_models / "septimbre.onnx", graph)
    out = subprocess.run([sys.executable, "-m", "timbreamt", "fit-count", str(graph), "--data", str(clips),
                          "--val", str(clips), "--threads", "1"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "2 training clips" in out.stdout and "kept l2" in out.stdout
    model = count.CountModel.from_json(read_metadata(graph.read_bytes())["count_model"])
    assert model.classes == (1, 3)
    from timbreamt.runtime.transcriber import Transcriber

    t = Transcriber(graph, threads=1)
    assert len(t.transcribe(REFERENCE / "three_mix.wav", instruments="auto").tracks) == 3
    assert len(t.transcribe(REFERENCE / "piano_short.wav", instruments="auto").tracks) == 1
    # a BasicAMT graph cannot hold one: a one-line error
    bad = subprocess.run([sys.executable, "-m", "timbreamt", "fit-count", str(shipped_models / "basicamt.onnx"),
                          "--data", str(clips), "--val", str(clips)], capture_output=True, text=True)
    assert bad.returncode != 0 and "no timbre embedding" in bad.stderr and "Traceback" not in bad.stderr


def test_the_shipped_septimbre_counts_with_its_fitted_model(shipped_models):
    from timbreamt.core.graph_metadata import read_metadata

    meta = read_metadata((shipped_models / "septimbre.onnx").read_bytes())
    model = count.count_model_from_metadata(meta)
    assert model is not None and model.classes == (1, 2, 3, 4)
    assert count.count_model_from_metadata(read_metadata((shipped_models / "basicamt.onnx").read_bytes())) is None


def test_fit_count_refuses_empty_folder_lists_and_unwritable_graphs(tmp_path, shipped_models):
    import subprocess
    import sys

    from timbreamt.core.errors import OutputError
    from timbreamt.training.count import write_count_model

    r = subprocess.run([sys.executable, "-m", "timbreamt", "fit-count", str(shipped_models / "septimbre.onnx"),
                        "--data", "", "--val", ","], capture_output=True, text=True)
    assert r.returncode == 2 and "expected one or more folders" in r.stderr and "Traceback" not in r.stderr
    # a graph whose folder cannot take the new file: one error, nothing left behind, the graph unchanged
    graph = tmp_path / "graph.onnx"
    graph.write_bytes((shipped_models / "septimbre.onnx").read_bytes())
    blocker = tmp_path / "graph.onnx.tmp"
    blocker.mkdir()                       # the temporary file's name is taken by a folder
    from timbreamt.core.graph_metadata import read_metadata

    model = count.count_model_from_metadata(read_metadata(graph.read_bytes()))
    before = graph.read_bytes()
    with pytest.raises(OutputError, match="cannot write the count model"):
        write_count_model(graph, model)
    assert graph.read_bytes() == before and blocker.is_dir()
