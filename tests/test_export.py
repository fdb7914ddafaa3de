"""Export guarantees: checked on a fresh export and on the shipped graphs."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

import onnxruntime as ort  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from timbreamt.core import constants as C  # noqa: E402
from timbreamt.core.errors import ExportError  # noqa: E402
from timbreamt.training.export import check_eps_guard, check_web_compatible, export_model, verify  # noqa: E402
from timbreamt.training.models import build_model  # noqa: E402
from timbreamt.core.graph_metadata import read_metadata  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("basicamt").eval()
    path = export_model(model, "basicamt", tmp_path_factory.mktemp("exp") / "basicamt.onnx",
                        {"onset_threshold": "0.45"})
    return model, path


def test_export_writes_contract_and_metadata(exported):
    _, path = exported
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["audio"]
    assert [o.name for o in sess.get_outputs()] == ["onset", "frame"]
    meta = read_metadata(path.read_bytes())
    assert meta["onset_threshold"] == "0.45" and meta["model"] == "basicamt"
    assert meta == sess.get_modelmeta().custom_metadata_map
    for seconds in (1, 7.3):
        n = int(seconds * 44100)
        onset, frame = sess.run(None, {"audio": np.zeros((1, 1, n), np.float32)})
        assert onset.shape == frame.shape == (1, 84, ((n + 1) // 2 - 1) // 256 + 1)


def test_export_fuses_the_note_heads(exported):
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(exported[1])).graph
    shapes = [tuple(numpy_helper.to_array(t).shape) for t in graph.initializer]
    assert (8, 16, 7, 5) in shapes            # one conv for both heads (NoteBranch.fuse_heads)
    assert (1, 16, 5, 5) not in shapes        # no separate 1-channel frame head
    assert exported[0].notes.fused_heads is None   # the caller's model is left unfused


def test_torch_onnx_parity(exported):
    model, path = exported
    from timbreamt.training.export import _wrapper

    rng = np.random.default_rng(1)
    audio = (rng.standard_normal((1, 1, 44100 * 3)) * 0.2).astype(np.float32)
    with torch.no_grad():
        want = _wrapper(model)(torch.from_numpy(audio))
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"audio": audio})
    for w, g in zip(want, got):
        assert np.abs(w.numpy() - g).max() < 1e-4


def test_eps_is_bit_exact_in_graph(exported):
    _, path = exported
    from timbreamt.training.export import _initializers

    consts = list(_initializers(onnx.load(str(path)).graph).values())
    bits = np.float32(C.EPS).view(np.uint32)
    assert any(c.dtype == np.float32 and c.size == 1 and c.reshape(-1)[0].view(np.uint32) == bits for c in consts)


def test_guard_rejects_folded_eps(exported):
    _, path = exported
    g = onnx.load(str(path))
    replaced = 0
    tensors = list(g.graph.initializer) + [a.t for n in g.graph.node if n.op_type == "Constant" for a in n.attribute]
    for t in tensors:
        arr = numpy_helper.to_array(t)
        if arr.dtype == np.float32 and arr.size == 1 and np.float32(arr.reshape(-1)[0]) == np.float32(C.EPS):
            t.CopyFrom(numpy_helper.from_array(np.array(1e-8, np.float32).reshape(arr.shape), t.name))
            replaced += 1
    assert replaced == 1
    with pytest.raises(ExportError, match="EPS"):
        check_eps_guard(g)


def test_guard_rejects_unguarded_log():
    from onnx import TensorProto, helper

    node = helper.make_node("Log", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(ExportError, match="unguarded"):
        check_eps_guard(helper.make_model(graph))


def test_web_compatibility_checks(exported):
    _, path = exported
    g = onnx.load(str(path))
    check_web_compatible(g)
    assert max(i.version for i in g.opset_import if i.domain in ("", "ai.onnx")) <= 20
    g.opset_import[0].version = 21
    with pytest.raises(ExportError, match="opset"):
        check_web_compatible(g)


def test_crop_is_optional_with_a_zero_default(exported):
    """The contract's one required input stays ``audio``; ``crop`` is an overridable initializer
    (default [0, 0]) that only the Python runtime feeds. Without its default it would be a second
    required input, which the web check refuses."""
    _, path = exported
    g = onnx.load(str(path))
    defaults = {t.name: numpy_helper.to_array(t) for t in g.graph.initializer}
    assert defaults["crop"].tolist() == [0, 0]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_overridable_initializers()] == ["crop"]
    audio = (np.random.default_rng(1).standard_normal((1, 1, 44100 * 4)) * 0.1).astype(np.float32)
    full = sess.run(None, {"audio": audio})
    same = sess.run(None, {"audio": audio, "crop": np.zeros(2, np.int64)})
    for a, b in zip(full, same):
        assert np.array_equal(a, b)
    cut = sess.run(None, {"audio": audio, "crop": np.array([40, 12], np.int64)})
    assert cut[1].shape[-1] == full[1].shape[-1] - 52
    for t in list(g.graph.initializer):
        if t.name == "crop":
            g.graph.initializer.remove(t)
    with pytest.raises(ExportError, match="crop is not float32"):
        check_web_compatible(g)


@pytest.mark.parametrize("name", ["basicamt", "septimbre"])
def test_shipped_models_pass_every_check(shipped_models, name):
    figures = verify(shipped_models / f"{name}.onnx", name)
    assert figures["max_abs_diff"] == 0.0   # no torch model given: only the ORT checks ran
    meta = read_metadata((shipped_models / f"{name}.onnx").read_bytes())
    assert 0 < float(meta["onset_threshold"]) < 1 and 0 < float(meta["frame_threshold"]) < 1


def test_shipped_models_finite_on_edge_inputs(shipped_models):
    sess = ort.InferenceSession(str(shipped_models / "septimbre.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for audio in (np.zeros(1, np.float32), np.zeros(44100, np.float32), rng.uniform(-1, 1, 44100).astype(np.float32),
                  (rng.standard_normal(44100) * 1e-5).astype(np.float32)):
        for out in sess.run(None, {"audio": audio[None, None]}):
            assert np.isfinite(out).all()
    onset, frame, _ = sess.run(None, {"audio": np.zeros((1, 1, 44100 * 2), np.float32)})
    meta = sess.get_modelmeta().custom_metadata_map
    # silence stays below the graph's own decoding thresholds (no max division amplifies it to a note)
    assert frame.max() < float(meta["frame_threshold"]) and onset.max() < float(meta["onset_threshold"])
