"""The page, the ES module API and the noteDigger plugin in Chromium (Playwright), against the CLI."""
from __future__ import annotations

import json
import shutil
from urllib.parse import urlparse

import numpy as np
import pytest
import soundfile as sf

from conftest import REFERENCE, REFERENCE_MODELS

pytestmark = pytest.mark.browser
TIMEOUT = 120_000


def open_page(page, url):
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(TIMEOUT)
    page.goto(url)
    page.wait_for_function("document.body.dataset.ready === 'true' || "
                           "document.getElementById('status').classList.contains('error')")
    assert page.get_attribute("body", "data-ready") == "true", page.inner_text("#status")
    return errors


def page_transcribe(page, wav_url, model, instruments):
    return page.evaluate("""async ([url, model, instruments]) => {
        // the page's own decoding path (exact WAV reading, as the CLI's libsndfile)
        const { decodeAudio } = await import('./timbreamt.js');
        const audio = await decodeAudio(await (await fetch(url)).arrayBuffer());
        const r = await window.timbreamtPage.transcriber.transcribeDetailed(audio.samples, audio.sampleRate,
            { model, instruments, returnMaps: true });
        return { transcription: r.transcription, maps: r.maps, timings: r.timings, windowed: r.windowed };
    }""", [wav_url, model, instruments])


def record_parity(key, value):
    """Measured page-vs-CLI map differences, kept as a test artifact for the notes."""
    from conftest import ARTIFACTS

    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "parity.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    path.write_text(json.dumps(data, indent=1))


def python_mono(path):
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return data.mean(axis=1, dtype=np.float32), sr


@pytest.mark.parametrize("name,model,instruments", [("three_mix", "septimbre", 3), ("piano_short", "basicamt", 1),
                                                     ("three_mix", "septimbre", "auto")])
def test_page_matches_cli(page, base_url, web_bundle, name, model, instruments):
    from timbreamt.runtime.model import Model
    from timbreamt.runtime.transcriber import Transcriber

    shutil.copy(REFERENCE / f"{name}.wav", web_bundle / "examples" / f"parity_{name}.wav")
    errors = open_page(page, base_url)
    got = page_transcribe(page, f"examples/parity_{name}.wav", model, instruments)
    # the page loads the windowed variant (crop required) and crops each window like the CLI
    assert got["windowed"] is True
    assert (web_bundle / "models" / f"{model}.windowed.onnx").is_file()
    path = web_bundle / "models" / f"{model}.onnx"
    mono, sr = python_mono(REFERENCE / f"{name}.wav")
    assert sr == 44100
    maps = Model(path).run(mono)
    for key in ("onset", "frame") + (("embedding",) if model == "septimbre" else ()):
        m = got["maps"][key]
        page_map = np.array(m["data"], np.float32).reshape(-1, m["frames"])
        want = maps[key].reshape(-1, maps[key].shape[-1])
        assert page_map.shape == want.shape
        diff = float(np.abs(page_map - want).max())
        record_parity(f"{name}-{model}-{instruments}-{key}", diff)
        assert diff < 1e-4, key
    cli = Transcriber(path).transcribe(mono, sr=44100, instruments=None if instruments == 1 else instruments)
    page_json, cli_json = got["transcription"], cli.to_dict()
    assert page_json["duration"] == pytest.approx(cli_json["duration"])

    def notes(d):
        return sorted((n["pitch"], round(n["start"] * 22050 / 256), round(n["end"] * 22050 / 256), t_i)
                      for t_i, t in enumerate(d["tracks"]) for n in t["notes"])
    a, b = notes(page_json), notes(cli_json)
    assert [x[:3] for x in a] == [x[:3] for x in b] and len(a) > 0
    # identical track assignment up to label permutation
    pairs = {(x[3], y[3]) for x, y in zip(sorted(a), sorted(b))}
    assert len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})
    assert len(page_json["tracks"]) == len(cli_json["tracks"])
    assert errors == []


def test_page_flow_download_and_no_foreign_requests(page, base_url, artifacts, tmp_path):
    import mido

    hosts = set()
    page.on("request", lambda r: hosts.add(urlparse(r.url).hostname) if r.url.startswith("http") else None)
    errors = open_page(page, base_url)
    page.set_input_files("#file", str(REFERENCE / "three_mix.wav"))
    page.wait_for_function("document.body.dataset.loaded === 'true'")
    page.select_option("#instruments", "auto")
    page.click("#run")
    page.wait_for_function("document.body.dataset.done === 'true' || "
                           "document.getElementById('status').classList.contains('error')")
    status = page.inner_text("#status")
    assert status.startswith("Done:"), status
    page.screenshot(path=str(artifacts / "page_three_mix.png"), full_page=True)
    # the piano roll shows notes: coloured pixels on the dark background
    painted = page.evaluate("""() => {
        const c = document.getElementById('roll'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 150 || d[i + 1] > 150 || d[i + 2] > 200) n++;
        return n; }""")
    assert painted > 200
    with page.expect_download() as dl:
        page.click("#download-midi")
    midi_path = tmp_path / "out.mid"
    dl.value.save_as(str(midi_path))
    with page.expect_download() as dj:
        page.click("#download-json")
    json_path = tmp_path / "out.json"
    dj.value.save_as(str(json_path))
    data = json.loads(json_path.read_text())
    mid = mido.MidiFile(str(midi_path))
    assert sum(1 for t in mid.tracks for m in t if m.type == "note_on") == sum(len(t["notes"]) for t in data["tracks"])
    assert len(mid.tracks) == len(data["tracks"]) + 1
    assert set(data) == {"version", "model", "sample_rate", "duration", "tracks"}
    assert hosts == {"127.0.0.1"}
    assert errors == []


def test_page_rejects_a_non_audio_file(page, base_url, tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"definitely not audio" * 50)
    open_page(page, base_url)
    page.set_input_files("#file", str(junk))
    page.wait_for_function("document.getElementById('status').classList.contains('error')")
    assert "not a supported audio file" in page.inner_text("#status")
    assert page.is_disabled("#run")


def test_page_without_webassembly_says_so(page, base_url):
    page.add_init_script("delete window.WebAssembly")
    page.goto(base_url)
    page.wait_for_function("document.getElementById('status').classList.contains('error')")
    assert "no WebAssembly" in page.inner_text("#status")
    assert page.get_attribute("body", "data-ready") != "true"


def _load_into_notedigger(page, url):
    page.set_default_timeout(TIMEOUT)
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.route("**/__test__/three_mix.wav", lambda route: route.fulfill(
        path=str(REFERENCE / "three_mix.wav"), headers={"Content-Type": "audio/wav"}))
    page.goto(url)
    page.wait_for_function("typeof AI !== 'undefined' && window.app && window.menu")
    page.evaluate("""async () => {
        const blob = await (await fetch('/__test__/three_mix.wav')).blob();
        const file = new File([blob], 'three_mix.wav', { type: 'audio/wav' });
        const done = app.io.onfile(file);
        await new Promise((r) => setTimeout(r, 300));
        document.querySelector('.request-cover .ui-confirm').click();
        await done;
    }""")
    return dialogs


def test_notedigger_plugin_adds_channels(browser, notedigger_url):
    url, _ = notedigger_url
    context = browser.new_context()
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    dialogs = _load_into_notedigger(page, url)
    entries = page.eval_on_selector_all(".timbreamt-entry", "els => els.map(e => e.textContent)")
    assert any("auto" in e for e in entries)
    out = page.evaluate("""async () => {
        const before = app.MidiAction.midi.length;
        const { result, channels } = await window.timbreamtPlugin.transcribe(null, 'auto');
        const added = app.MidiAction.midi.slice(before);
        return { channels, tracks: result.tracks.filter(t => t.notes.length).length,
                 notes: result.tracks.reduce((n, t) => n + t.notes.length, 0), added: added.length,
                 chans: [...new Set(added.map(n => n.ch))].length,
                 first: added[0], dt: app.dt, firstSec: result.tracks.flatMap(t => t.notes).sort((a,b)=>a.start-b.start)[0] };
    }""")
    assert out["notes"] > 5 and out["added"] == out["notes"]
    assert out["channels"] == out["tracks"] == out["chans"] >= 1
    # times converted to noteDigger's grid: x = seconds * 1000 / dt
    assert out["first"]["x1"] == pytest.approx(out["firstSec"]["start"] * 1000 / out["dt"])
    assert dialogs == [] and errors == []
    context.close()


def test_notedigger_dropin_worker_runs_reference_model(browser, notedigger_url):
    url, root = notedigger_url
    shutil.copy(REFERENCE_MODELS / "septimbre_44100.onnx", root / "timbreamt" / "models" / "ref_septimbre.onnx")
    context = browser.new_context()
    page = context.new_page()
    # the drop-in worker replaces noteDigger's own; its config points at the reference graph
    page.route("**/dataProcess/AI/septimbre_worker.js", lambda route: route.fulfill(
        path=str(root / "timbreamt" / "notedigger" / "septimbre_worker.js"), headers={"Content-Type": "text/javascript"}))
    page.route("**/timbreamt/notedigger/config.json", lambda route: route.fulfill(
        body=json.dumps({"septimbre": "models/ref_septimbre.onnx", "basicamt": "models/basicamt.onnx"}),
        headers={"Content-Type": "application/json"}))
    dialogs = _load_into_notedigger(page, url)
    out = page.evaluate("""async () => {
        const bytes = await (await fetch('/__test__/three_mix.wav')).arrayBuffer();
        const buf = await app.audioContext.decodeAudioData(bytes);
        const before = app.MidiAction.midi.length;
        await app.Analyser.septimbre(buf, 3);
        const added = app.MidiAction.midi.slice(before);
        return { added: added.length, chans: [...new Set(added.map(n => n.ch))].length };
    }""")
    assert dialogs == []
    assert out["added"] > 10 and out["chans"] == 3
    context.close()


@pytest.mark.parametrize("model", ["basicamt", "septimbre"])
def test_shipped_graphs_run_in_notedigger_onnxruntime_web_1_18(browser, notedigger_url, model):
    """Our graphs in noteDigger's own onnxruntime-web (1.18, dataProcess/AI/dist), single-threaded as
    noteDigger runs it (no cross-origin isolation): it loads them and agrees with onnxruntime (CPU)."""
    import onnxruntime as ort

    url, root = notedigger_url
    audio, sr = python_mono(REFERENCE / "three_mix.wav")
    assert sr == 44100
    clip = np.ascontiguousarray(audio[: 6 * sr])
    (root / "ort118_input.f32").write_bytes(clip.tobytes())
    (root / "ort118.html").write_text('<!doctype html><script src="dataProcess/AI/dist/bundle.min.js"></script>')
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(url + "ort118.html")
    out = page.evaluate("""async (model) => {
        ort.env.wasm.wasmPaths = './dataProcess/AI/dist/';
        ort.env.wasm.numThreads = 1;
        const bytes = new Uint8Array(await (await fetch('timbreamt/models/' + model + '.onnx')).arrayBuffer());
        const session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
        const samples = new Float32Array(await (await fetch('ort118_input.f32')).arrayBuffer());
        const result = await session.run({ audio: new ort.Tensor('float32', samples, [1, 1, samples.length]) });
        const maps = {};
        for (const name of session.outputNames) maps[name] = { dims: result[name].dims, data: Array.from(result[name].data) };
        return { outputs: session.outputNames, maps };
    }""", model)
    context.close()
    session = ort.InferenceSession(str(root / "timbreamt" / "models" / f"{model}.onnx"), providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"audio": clip[None, None]})))
    assert out["outputs"] == list(want)
    for name, ref in want.items():
        got = np.array(out["maps"][name]["data"], dtype=np.float32).reshape(out["maps"][name]["dims"])
        assert got.shape == ref.shape and np.isfinite(got).all()
        # the same bound as the page-vs-CLI parity test (float32 summation order, wasm vs MLAS)
        assert np.abs(got - ref).max() < 1e-3, (name, float(np.abs(got - ref).max()))
        record_parity(f"ort-web-1.18 {model} {name}", float(np.abs(got - ref).max()))


def test_page_reads_wav_exactly_like_the_cli(page, base_url, web_bundle, tmp_path):
    """parseWav (the page's WAV reader) gives the samples soundfile gives, for every PCM width and
    float, mono and multi-channel: page and CLI start from identical input."""
    rng = np.random.default_rng(0)
    cases = [("PCM_16", 2, 44100), ("PCM_24", 1, 22050), ("PCM_32", 3, 48000), ("PCM_U8", 1, 8000), ("FLOAT", 2, 44100),
             ("DOUBLE", 1, 16000)]
    for subtype, channels, sr in cases:
        data = np.clip(rng.standard_normal((2000, channels)) * 0.3, -1, 1)
        sf.write(web_bundle / "examples" / f"wav_{subtype}.wav", data, sr, subtype=subtype)
    open_page(page, base_url)
    out = page.evaluate("""async (names) => {
        const { parseWav } = await import('./timbreamt.js');
        const res = {};
        for (const n of names) {
            const w = parseWav(await (await fetch('examples/wav_' + n + '.wav')).arrayBuffer());
            res[n] = { rate: w.sampleRate, channels: w.channels, samples: Array.from(w.samples) };
        }
        res.notWav = parseWav(new TextEncoder().encode('ID3 not a wav at all').buffer);
        return res;
    }""", [c[0] for c in cases])
    assert out["notWav"] is None
    for subtype, channels, sr in cases:
        want, want_sr = sf.read(web_bundle / "examples" / f"wav_{subtype}.wav", dtype="float32", always_2d=True)
        got = np.array(out[subtype]["samples"], np.float32)
        assert out[subtype]["rate"] == want_sr == sr and out[subtype]["channels"] == channels
        np.testing.assert_array_equal(got, want.mean(axis=1, dtype=np.float32), err_msg=subtype)


def test_out_of_memory_gives_a_clear_message(page, base_url, web_bundle):
    """A graph whose outputs cannot both fit in WebAssembly's 4 GB (two maps of 84 x 2^23 floats, 2.8 GB
    each) fails with a message that says so, not a raw runtime error."""
    import onnx
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [1, 84, 1 << 23])
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [1, 1, 1], [0.0])
    graph = helper.make_graph(
        [helper.make_node("ReduceMax", ["audio"], ["peak"], keepdims=1),
         helper.make_node("Mul", ["peak", "zero"], ["z"]),
         helper.make_node("Expand", ["z", "shape"], ["onset"]),
         helper.make_node("Add", ["onset", "zero"], ["frame"])],
        "oom", [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, 1, None])],
        [helper.make_tensor_value_info("onset", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("frame", TensorProto.FLOAT, None)], initializer=[shape, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, web_bundle / "models" / "oom_test.onnx")
    errors = open_page(page, base_url)
    message = page.evaluate("""async () => {
        try {
            await window.timbreamtPage.transcriber.transcribe(new Float32Array(44100), 44100,
                { model: 'models/oom_test.onnx', instruments: 1 });
            return 'no error';
        } catch (e) { return String(e.message || e); }
    }""")
    assert message.startswith("out of memory"), message
    assert "shorter file" in message
    assert errors == []                                   # reported, not thrown at the page
