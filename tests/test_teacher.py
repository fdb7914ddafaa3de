"""Distillation from a published note graph (training/teacher.py): its unscaled maps, their calibration to
our labels, and the crops the sampler hands to the loss."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from timbreamt.core import constants as C  # noqa: E402
from timbreamt.core.errors import DataError, ModelError, OutputError  # noqa: E402
from timbreamt.training import teacher as T  # noqa: E402


def _reference_graph(reference_dir):
    return reference_dir.parent / "reference-models" / "basicamt_44100.onnx"


def test_probability_graph_exposes_the_maps_before_their_maximum(reference_dir):
    import onnxruntime as ort

    graph = _reference_graph(reference_dir)
    session = ort.InferenceSession(T.probability_graph(graph), providers=["CPUExecutionProvider"])
    audio, rate = sf.read(reference_dir / "piano_short.wav", dtype="float32", always_2d=True)
    assert rate == C.GRAPH_SAMPLE_RATE
    onset, frame, onset_probs, frame_probs = session.run(
        ["onset", "frame", "onset_probs", "frame_probs"], {"audio": audio.sum(1)[None, None]})
    for scaled, probs in ((onset, onset_probs), (frame, frame_probs)):
        probs = probs.reshape(scaled.shape)
        assert 0 < probs.max() < 1                         # a probability, not a map scaled to its maximum
        np.testing.assert_allclose(probs / probs.max(), scaled, atol=1e-6)
    # the reference's onsets are not confident: unscaled, its strongest is far below the scaled 1
    assert onset_probs.max() < 0.8 and onset.max() == pytest.approx(1.0)


def test_a_graph_without_sigmoid_maps_is_refused(tmp_path):
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["audio"], [name]) for name in T.MAP_NAMES]
    graph = helper.make_graph(nodes, "not_notes", [helper.make_tensor_value_info("audio", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in T.MAP_NAMES])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ModelError, match="does not come from a sigmoid"):
        T.probability_graph(path)
    with pytest.raises(ModelError, match="teacher graph not found"):
        T.probability_graph(tmp_path / "missing.onnx")


def test_files_that_are_not_note_graphs_are_refused_in_one_line(tmp_path):
    from onnx import TensorProto, helper

    text = tmp_path / "notes.onnx"
    text.write_text("not a graph")
    with pytest.raises(ModelError, match="not a readable ONNX file"):
        T.probability_graph(text)
    folder = tmp_path / "graph.onnx"
    folder.mkdir()
    with pytest.raises(ModelError, match="is a folder"):
        T.probability_graph(folder)
    # sigmoid maps, but fed from an input the teacher does not give: refused before running it
    nodes = [helper.make_node("Sigmoid", ["x"], [name]) for name in T.MAP_NAMES]
    graph = helper.make_graph(nodes, "other_input", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in T.MAP_NAMES])
    path = tmp_path / "x.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ModelError, match=r"takes the inputs \['x'\]"):
        T.probability_graph(path)
    # sigmoid maps of 'audio', but not 84 pitches: refused when run, not reshaped into wrong maps
    nodes = [helper.make_node("Sigmoid", ["audio"], [name]) for name in T.MAP_NAMES]
    graph = helper.make_graph(nodes, "echo", [helper.make_tensor_value_info("audio", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in T.MAP_NAMES])
    path = tmp_path / "echo.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ModelError, match="gives maps of shape"):
        T.GraphTeacher(path).maps(np.full(C.SAMPLE_RATE, 0.1, np.float32))


def test_platt_fit_recovers_a_known_calibration():
    rng = np.random.default_rng(3)
    probs = rng.uniform(0.001, 0.999, 200_000)
    a, b = 1.7, -0.8
    labels = rng.random(probs.size) < 1 / (1 + np.exp(-(a * np.log(probs / (1 - probs)) + b)))
    fitted = T.platt_fit(probs, labels)
    assert fitted == pytest.approx((a, b), abs=0.05)
    maps = np.stack([np.full((84, 5), 0.3), np.full((84, 5), 0.6)])[None]
    out = T.calibrate(maps, {"onset": [1.0, 0.0], "frame": [a, b]})
    np.testing.assert_allclose(out[0, 0], 0.3, rtol=1e-5)              # identity calibration
    assert out[0, 1, 0, 0] == pytest.approx(1 / (1 + np.exp(-(a * np.log(0.6 / 0.4) + b))), rel=1e-5)
    with pytest.raises(ValueError, match="one class only"):
        T.platt_fit(probs[:10], np.zeros(10))
    with pytest.raises(ValueError, match="of one length"):
        T.platt_fit(probs[:10], np.zeros(9))


def _tiny_data(tmp_path):
    """Two clips of two tones each, saved as `timbreamt data` writes them."""
    from conftest import tone

    data = tmp_path / "data"
    data.mkdir()
    for i, (first, second) in enumerate(((60, 67), (48, 72))):
        audio = np.concatenate([tone(first, 1.5, C.SAMPLE_RATE), tone(second, 1.5, C.SAMPLE_RATE)]).astype(np.float16)
        notes = np.array([[first, 0.0, 1.5, 0], [second, 1.5, 3.0, 0]], np.float32)
        np.savez(data / f"clip_{i:06d}.npz", audio=audio, notes=notes, programs=np.array([0]))
    return data


def _data_with_maps(tmp_path, reference_dir):
    """(data folder, teacher graph, teacher folder): _tiny_data with its teacher maps made."""
    data, graph, out = _tiny_data(tmp_path), _reference_graph(reference_dir), tmp_path / "teacher"
    T.write_teacher_maps(data, out, graph, progress=False)
    return data, graph, out


def test_teacher_maps_line_up_with_the_labels_and_resume(tmp_path, reference_dir):
    data = _tiny_data(tmp_path)
    graph = _reference_graph(reference_dir)
    out = tmp_path / "teacher"
    assert T.write_teacher_maps(data, out, graph, progress=False) == 2
    meta = json.loads((out / T.TEACHER_META).read_text())
    assert meta["sha256"] and set(meta["calibration"]) == {"onset", "frame"}
    from timbreamt.training.data import list_clips, load_clip, piano_rolls

    for path in list_clips(data):
        clip = load_clip(path)
        maps = T.load_teacher_maps(out, path, len(clip["audio"]))
        rolls = piano_rolls(clip["notes"], maps.shape[-1])
        # the teacher hears each tone where it is labelled: its frame map is far higher inside the notes
        inside, outside = maps[1][rolls["frame"] > 0], maps[1][rolls["frame"] == 0]
        assert inside.mean() > 10 * outside.mean()
        # and its onsets peak within a frame of the labelled onset of the second tone
        pitch, start = int(clip["notes"][1, 0]) - C.MIDI_MIN, int(round(1.5 * C.FRAMES_PER_SECOND))
        assert abs(int(np.argmax(maps[0, pitch, start - 8:start + 9])) - 8) <= 1
    # resumable: done clips are kept; a folder of another graph's maps is refused
    assert T.write_teacher_maps(data, out, graph, progress=False) == 0
    other = tmp_path / "other.onnx"          # another graph: the reference with one more metadata entry
    model = onnx.load(str(graph))
    onnx.helper.set_model_props(model, {"other": "yes"})
    onnx.save(model, str(other))
    with pytest.raises(DataError, match="maps of another teacher graph"):
        T.write_teacher_maps(data, out, other, progress=False)
    with pytest.raises(DataError, match="no teacher maps for"):
        T.load_teacher_maps(tmp_path, list_clips(data)[0], 3 * C.SAMPLE_RATE)
    with pytest.raises(DataError, match="have shape"):
        T.load_teacher_maps(out, list_clips(data)[0], 2 * C.SAMPLE_RATE)


def test_maps_of_other_clips_under_the_same_names_are_never_used(tmp_path, reference_dir):
    from timbreamt.training.data import list_clips, load_clip

    data, graph, out = _data_with_maps(tmp_path, reference_dir)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # another data set of the same names and lengths (the form every `timbreamt data` set has)
    other = tmp_path / "other"
    other.mkdir()
    for path in list_clips(data):
        clip = load_clip(path)
        np.savez(other / path.name, **(clip | {"audio": clip["audio"][::-1].copy()}))
    with pytest.raises(DataError, match="holds maps of another clip_000000.npz"):
        T.write_teacher_maps(other, out, graph, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before        # refused before touching anything
    with pytest.raises(DataError, match="were made from another clip_000000.npz"):
        T.load_teacher_maps(out, list_clips(other)[0], 3 * C.SAMPLE_RATE)


def test_a_rerun_after_a_kill_or_a_new_clip_makes_what_is_missing_and_calibrates_again(tmp_path, reference_dir):
    from conftest import tone
    from timbreamt.training.data import list_clips

    data, graph, out = _data_with_maps(tmp_path, reference_dir)
    first = json.loads((out / T.TEACHER_META).read_text())["calibration"]
    # a run killed mid-way: a partial file, a map cut short, teacher.json without its calibration
    (out / "clip_000001.partial.npz").write_bytes(b"PK\3\4")
    cut = T.teacher_path(out, list_clips(data)[1])
    cut.write_bytes(cut.read_bytes()[:100])
    meta = json.loads((out / T.TEACHER_META).read_text())
    del meta["calibration"]
    (out / T.TEACHER_META).write_text(json.dumps(meta))
    with pytest.raises(DataError, match="unfinished"):
        T.read_calibration(out)
    with pytest.raises(DataError, match="unreadable"):
        T.load_teacher_maps(out, list_clips(data)[1], 3 * C.SAMPLE_RATE)
    assert T.write_teacher_maps(data, out, graph, progress=False) == 1       # the cut map, made anew
    assert not list(out.glob("*.partial*"))
    for name in T.MAP_NAMES:
        assert T.read_calibration(out)[name] == pytest.approx(first[name])
    # a clip added to the data set after the calibration: training refuses it until the maps are made again,
    # and the rerun makes its maps and fits the calibration on every clip, the new one included
    audio = tone(55, 3.0, C.SAMPLE_RATE).astype(np.float16)
    np.savez(data / "clip_000002.npz", audio=audio, notes=np.array([[55, 0.0, 3.0, 0]], np.float32),
             programs=np.array([0]))
    with pytest.raises(DataError, match="no teacher maps for clip_000002.npz"):
        T.load_teacher_maps(out, data / "clip_000002.npz", len(audio))
    assert T.write_teacher_maps(data, out, graph, progress=False) == 1
    meta = json.loads((out / T.TEACHER_META).read_text())
    assert meta["clips"] == 3 and meta["calibration"] == T.fit_calibration(list_clips(data), out)
    # a teacher.json cut short is named, not a traceback
    (out / T.TEACHER_META).write_text('{"teach')
    for call in (lambda: T.read_calibration(out), lambda: T.write_teacher_maps(data, out, graph, progress=False)):
        with pytest.raises(DataError, match="teacher.json is unreadable"):
            call()


def test_bad_data_and_output_folders_are_refused_without_harm(tmp_path, reference_dir):
    from timbreamt.training.data import list_clips

    data = _tiny_data(tmp_path)
    graph = _reference_graph(reference_dir)
    clips = {p.name: p.read_bytes() for p in data.iterdir()}
    with pytest.raises(OutputError, match="is the data folder"):
        T.write_teacher_maps(data, data, graph, progress=False)
    with pytest.raises(OutputError, match="is a file"):
        T.write_teacher_maps(data, list_clips(data)[0], graph, progress=False)
    with pytest.raises(OutputError, match="cannot write the teacher maps"):
        T.write_teacher_maps(data, list_clips(data)[0] / "maps", graph, progress=False)
    assert {p.name: p.read_bytes() for p in data.iterdir()} == clips
    # a graph that is no graph: refused before the folder is made
    with pytest.raises(ModelError):
        T.write_teacher_maps(data, tmp_path / "new", data, progress=False)
    assert not (tmp_path / "new").exists()
    # a clip file without audio, and clips whose labels leave nothing to calibrate against
    np.savez(data / "clip_000001.npz", x=np.zeros(3))
    with pytest.raises(DataError, match="not a clip of `timbreamt data`"):
        T.write_teacher_maps(data, tmp_path / "maps", graph, progress=False)
    # digital silence: the reference returns NaN on it (it scales its input by its peak); the maps say no note
    assert not T.GraphTeacher(graph).maps(np.zeros(C.SAMPLE_RATE, np.float32)).any()
    silent = tmp_path / "silent"
    silent.mkdir()
    np.savez(silent / "clip_000000.npz", audio=np.zeros(C.SAMPLE_RATE, np.float16), notes=np.zeros((0, 4), np.float32),
             programs=np.array([0]))
    with pytest.raises(DataError, match="cannot calibrate the teacher's onset map"):
        T.write_teacher_maps(silent, tmp_path / "silent_maps", graph, progress=False)


def test_the_sampler_crops_teacher_maps_with_the_audio(tmp_path, reference_dir):
    from timbreamt.training.data import list_clips
    from timbreamt.training.train import ClipSampler

    data, _, out = _data_with_maps(tmp_path, reference_dir)
    batch = ClipSampler(data, 1.0, np.random.default_rng(0), teacher_maps=out).batch(4, noise_prob=0.0)
    n = batch["onset"].shape[-1]
    assert batch["teacher_onset"].shape == batch["onset"].shape == (4, C.N_PITCHES, n)
    assert batch["teacher_frame"].shape == batch["frame"].shape
    # calibrated probabilities, higher where the labels say a note sounds
    frame, labels = batch["teacher_frame"].numpy(), batch["frame"].numpy()
    assert 0 < frame.min() and frame.max() < 1
    assert frame[labels > 0].mean() > 3 * frame[labels == 0].mean()
    # maps that say which frame they are: a crop must read the frames of its own audio
    for path in list_clips(data):
        n_frames = (3 * C.SAMPLE_RATE - 1) // C.HOP + 1
        index = np.broadcast_to(np.arange(n_frames, dtype=np.float16), (C.N_PITCHES, n_frames))
        np.savez(T.teacher_path(out, path), onset=index, frame=index)
    sampler = ClipSampler(data, 1.0, np.random.default_rng(0), teacher_maps=out)
    for _ in range(20):
        clip = sampler.clips[0]
        seg, notes, start = sampler._crop(clip)
        crop = sampler._teacher_crop(clip, start, n)
        np.testing.assert_array_equal(seg, clip["audio"][start:start + sampler.segment].astype(np.float32))
        expected = np.arange(start // C.HOP, start // C.HOP + n)
        valid = expected < clip["teacher"].shape[-1]
        np.testing.assert_array_equal(crop[0, 0][valid], expected[valid])
        assert (crop[:, :, ~valid] == 0).all()
    with pytest.raises(DataError, match="cannot be used with --dynamic-mix"):
        ClipSampler(data, 1.0, np.random.default_rng(0), teacher_maps=out, dynamic_mix=0.5)


def test_train_with_teacher_maps_from_the_command_line(tmp_path, reference_dir):
    data = _tiny_data(tmp_path)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "timbreamt", *map(str, args)], capture_output=True, text=True)

    maps = tmp_path / "maps"
    r = cli("teacher-maps", "--data", data, "--out", maps, "--model", _reference_graph(reference_dir), "--quiet")
    assert r.returncode == 0 and "teacher maps of 2 more clips" in r.stdout, r.stderr
    run = tmp_path / "run"
    common = ["--data", data, "--out", run, "--steps", 2, "--batch", 2, "--segment", 1, "--quiet"]
    r = cli("train", "basicamt", "--epochs", 1, "--teacher-maps", maps, "--distill", 0.3, *common)
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "config.json").read_text())["teacher_maps"] == str(maps)
    # resuming without the teacher would change the loss mid-run: refused, in one line
    r = cli("train", "basicamt", "--epochs", 2, "--resume", *common)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert f"--teacher-maps {maps} --distill 0.3; resume it with the same" in r.stderr
    for bad, message in ((["--teacher-maps", maps, "--teacher", run], "two teachers: give one"),
                         (["--teacher-maps", tmp_path / "none"], "holds no teacher maps")):
        r = cli("train", "basicamt", "--epochs", 1, *bad, *[a if a != run else tmp_path / "unused" for a in common])
        assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = cli("teacher-maps", "--data", tmp_path / "empty", "--out", maps, "--quiet")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    # bad arguments: one line each, never a traceback; an empty path is not the current folder
    text = tmp_path / "text.onnx"
    text.write_text("not a graph")
    for bad, code, message in ((["--model", text], 4, "not a readable ONNX file"),
                               (["--model", tmp_path], 4, "is a folder"),
                               (["--threads", 0], 2, "--threads must be >= 1"),
                               (["--out", ""], 2, "expected a path, got an empty value")):
        args = {"--data": data, "--out": tmp_path / "maps2", "--model": _reference_graph(reference_dir)}
        args.update(dict(zip(bad[::2], bad[1::2])))
        r = cli("teacher-maps", *[x for kv in args.items() for x in kv], "--quiet")
        assert r.returncode == code and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = cli("train", "basicamt", "--epochs", 1, "--teacher-maps", "", *common)
    assert r.returncode == 2 and "expected a path" in r.stderr
