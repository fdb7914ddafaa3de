"""The page, the ES module API and the noteDigger plugin in Chromium (Playwright), against the CLI."""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import soundfile as sf

from conftest import REFERENCE, REFERENCE_MODELS

pytestmark = pytest.mark.browser
TIMEOUT = 120_000
SETTLED = ("document.body.dataset.state === 'done' || document.body.dataset.state === 'error' || "
           "document.body.dataset.state === 'loaded' && !!window.timbreamtPage.result")


def open_page(page, url):
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(TIMEOUT)
    page.goto(url)
    page.wait_for_function("document.body.dataset.ready === 'true' || "
                           "document.getElementById('status').classList.contains('error')")
    assert page.get_attribute("body", "data-ready") == "true", page.inner_text("#status")
    return errors


def wait_state(page, *states, timeout=TIMEOUT):
    page.wait_for_function("(states) => states.includes(document.body.dataset.state)", arg=list(states), timeout=timeout)
    return page.get_attribute("body", "data-state")


def load_and_run(page, path, model="septimbre", instruments="auto", timeout=TIMEOUT):
    """The user's way: choose the file, pick options, press Transcribe; returns the status line."""
    page.set_input_files("#file", str(path))
    assert wait_state(page, "loaded", "error") == "loaded", page.inner_text("#status")
    page.select_option("#model", model)
    if model == "septimbre":
        page.select_option("#instruments", str(instruments))
    page.click("#run")
    state = wait_state(page, "done", "error", timeout=timeout)
    status = page.inner_text("#status")
    assert state == "done", status
    return status


def roll_pixels(page):
    """Coloured (note) pixels on the roll's canvas, and the canvas size in CSS and device pixels."""
    page.wait_for_timeout(100)      # the roll paints on the next animation frame
    return page.evaluate("""() => {
        const c = document.getElementById('roll');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const colours = window.timbreamtPage.tracks.map(t => [1, 3, 5].map(i => parseInt(t.colour.slice(i, i + 2), 16)));
        let notes = 0;
        for (let i = 0; i < d.length; i += 4) {
            for (const [r, g, b] of colours) {
                if (Math.abs(d[i] - r) + Math.abs(d[i + 1] - g) + Math.abs(d[i + 2] - b) < 40) { notes++; break; }
            }
        }
        return { notes, width: c.width, height: c.height, cssWidth: c.clientWidth };
    }""")


def tiled_wav(path: Path, minutes: float, sr: int = 44100) -> Path:
    """three_mix (mono) repeated to ``minutes``, 16-bit, written in blocks (cheap long audio)."""
    data, file_sr = sf.read(str(REFERENCE / "three_mix.wav"), dtype="float32", always_2d=True)
    assert file_sr == sr
    from timbreamt.tools.bench import write_looped

    loop = data.mean(axis=1, dtype=np.float32)
    return write_looped(np.tile(loop, max(1, int(60 * sr // len(loop)))), minutes * 60, sr, path)


class RendererMemory:
    """Peak resident memory of the Chromium renderer processes started by this test process (the
    tab, its workers and their WebAssembly heaps live there; other people's browsers on the machine
    are not counted), sampled every 0.2 s from /proc."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> int:
        parents, renderers = {}, []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                parents[int(pid)] = int(stat.rsplit(")", 1)[1].split()[1])
                if b"--type=renderer" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    renderers.append(int(pid))
            except (OSError, ValueError, IndexError):
                continue
        me, total = os.getpid(), 0
        for pid in renderers:
            p, seen = pid, 0
            while p > 1 and p != me and seen < 50:
                p, seen = parents.get(p, 0), seen + 1
            if p != me:
                continue
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                continue
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def page_transcribe(page, wav_url, model, instruments):
    return page.evaluate("""async ([url, model, instruments]) => {
        // the page's own decoding path (exact WAV reading, as the CLI's libsndfile)
        const { decodeAudio } = await import('./timbreamt.js');
        const audio = await decodeAudio(await (await fetch(url)).arrayBuffer());
        // keepEmbeddings as the page does for Septimbre (so it can regroup later): same notes as the CLI
        const r = await window.timbreamtPage.transcriber.transcribeDetailed(audio.samples, audio.sampleRate,
            { model, instruments, returnMaps: true, keepEmbeddings: model === 'septimbre' });
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
                                                     ("three_mix", "septimbre", "auto"), ("three_mix", "septimbre", 1)])
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
    status = load_and_run(page, REFERENCE / "three_mix.wav", "septimbre", "auto")
    assert status.startswith("Done:"), status
    page.screenshot(path=str(artifacts / "page_three_mix.png"), full_page=True)
    # the piano roll shows notes: pixels of the tracks' colours on the dark background
    assert roll_pixels(page)["notes"] > 200
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
    with page.expect_download() as dc:
        page.click("#download-csv")
    csv_path = tmp_path / "out.csv"
    dc.value.save_as(str(csv_path))
    from timbreamt.core.midi import csv_text
    from timbreamt.core.transcription import Transcription

    # the CLI's own CSV of the same result
    assert csv_path.read_text() == csv_text(Transcription.from_dict(data))
    assert len(csv_path.read_text().strip().splitlines()) == 1 + sum(len(t["notes"]) for t in data["tracks"])
    assert hosts == {"127.0.0.1"}
    assert errors == []


def test_page_rejects_a_non_audio_file(page, base_url, tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"definitely not audio" * 50)
    open_page(page, base_url)
    page.set_input_files("#file", str(junk))
    assert wait_state(page, "error") == "error"
    status = page.inner_text("#status")
    assert "not a supported audio file" in status and "\n" not in status and "Traceback" not in status
    assert page.is_disabled("#run")
    assert page.evaluate("document.getElementById('progress').value") == 0


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


def _notedigger_page(browser, url: str):
    """(context, page, page errors, native dialogs) of noteDigger with the plugin loaded."""
    context = browser.new_context()
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return context, page, errors, _load_into_notedigger(page, url)


def test_notedigger_plugin_adds_channels(browser, notedigger_url):
    url, _ = notedigger_url
    context, page, errors, dialogs = _notedigger_page(browser, url)
    entries = page.eval_on_selector_all(".timbreamt-entry", "els => els.map(e => e.textContent)")
    assert any("auto" in e for e in entries)
    run = """async (k) => {
        const before = app.MidiAction.midi.length;
        const { result, channels, names } = await window.timbreamtPlugin.transcribe(null, k);
        const added = app.MidiAction.midi.slice(before);
        return { channels, names, tracks: result.tracks.filter(t => t.notes.length).length,
                 notes: result.tracks.reduce((n, t) => n + t.notes.length, 0), added: added.length,
                 chans: [...new Set(added.map(n => n.ch))].length,
                 first: added[0], dt: app.dt, firstSec: result.tracks.flatMap(t => t.notes).sort((a,b)=>a.start-b.start)[0] };
    }"""
    out = page.evaluate(run, "auto")
    assert out["notes"] > 5 and out["added"] == out["notes"]
    assert out["channels"] == out["tracks"] == out["chans"] >= 1
    # times converted to noteDigger's grid: x = seconds * 1000 / dt
    assert out["first"]["x1"] == pytest.approx(out["firstSec"]["start"] * 1000 / out["dt"])
    # a second run: distinct, numbered channel names
    second = page.evaluate(run, 3)
    assert second["names"] == ["timbreamt 1/3 · run 2", "timbreamt 2/3 · run 2", "timbreamt 3/3 · run 2"]
    assert all(n.endswith("· run 1") for n in out["names"])
    shown = page.evaluate("""() => [...document.querySelectorAll('.channel-Name')].map(d => d.textContent)""")
    assert set(out["names"] + second["names"]) <= set(shown)
    # and readable in noteDigger's channel list: not cut by its ellipsis
    cut = page.evaluate("""() => [...document.querySelectorAll('.channel-Name')]
        .filter(d => d.textContent.startsWith('timbreamt') && d.scrollWidth > d.clientWidth + 1).map(d => d.textContent)""")
    assert cut == []
    assert dialogs == [] and errors == []
    context.close()


def test_notedigger_asks_n_in_its_own_dialog(browser, notedigger_url):
    url, _ = notedigger_url
    context, page, errors, dialogs = _notedigger_page(browser, url)
    page.evaluate("""() => [...document.querySelectorAll('.timbreamt-entry')].find(e => e.textContent.includes('N instruments')).click()""")
    page.wait_for_selector(".timbreamt-ask input")
    for bad in ("0", "17", "2.5", "three", ""):
        page.fill(".timbreamt-ask input", bad)
        assert "not a number of instruments" in page.inner_text(".timbreamt-ask-error"), bad
        assert page.is_disabled(".timbreamt-ask .ui-confirm")
    page.fill(".timbreamt-ask input", "3")
    assert page.inner_text(".timbreamt-ask-error") == ""
    before = page.evaluate("app.MidiAction.midi.length")
    page.keyboard.press("Enter")
    page.wait_for_function("(n) => app.MidiAction.midi.length > n && "
                           "![...document.querySelectorAll('.timbreamt-entry')].some(e => e.textContent.includes('transcribing'))",
                           arg=before, timeout=TIMEOUT)
    names = page.evaluate("() => [...document.querySelectorAll('.channel-Name')].map(d => d.textContent).filter(n => n.startsWith('timbreamt'))")
    assert names == ["timbreamt 1/3 · run 1", "timbreamt 2/3 · run 1", "timbreamt 3/3 · run 1"]
    # Escape cancels without a run
    page.evaluate("""() => [...document.querySelectorAll('.timbreamt-entry')].find(e => e.textContent.includes('N instruments')).click()""")
    page.wait_for_selector(".timbreamt-ask input")
    page.keyboard.press("Escape")
    page.wait_for_function("!document.querySelector('.timbreamt-ask')")
    assert dialogs == [] and errors == []      # no native prompt or alert
    context.close()


def test_notedigger_dropin_worker_runs_reference_model(browser, notedigger_url):
    """noteDigger's own AI call with our drop-in worker (a fresh worker per call, as noteDigger does):
    the page's engine (the plugin) serves it, so the second call does not load onnxruntime-web and
    Python again."""
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
    call = """async () => {
        const bytes = await (await fetch('/__test__/three_mix.wav')).arrayBuffer();
        const buf = await app.audioContext.decodeAudioData(bytes);
        const chBefore = new Set(app.MidiAction.midi.map(n => n.ch));
        const t0 = performance.now();
        await app.Analyser.septimbre(buf, 3);
        const ms = performance.now() - t0;
        const added = app.MidiAction.midi.filter(n => !chBefore.has(n.ch));   // noteDigger re-sorts its list
        return { ms, added: added.length, chans: [...new Set(added.map(n => n.ch))].length,
                 hosted: window.timbreamtPlugin.hostedJobs };
    }"""
    first = page.evaluate(call)
    second = page.evaluate(call)
    assert dialogs == []
    assert first["added"] > 10 and first["chans"] == 3
    assert second["added"] == first["added"] and second["chans"] == 3
    assert first["hosted"] == 1 and second["hosted"] == 2          # both served by the page's engine
    record_parity("noteDigger drop-in call ms (first, second)", [round(first["ms"]), round(second["ms"])])
    assert second["ms"] < 0.6 * first["ms"], (first["ms"], second["ms"])
    context.close()


def test_notedigger_dropin_worker_loads_its_own_engine_without_the_plugin(browser, notedigger_url):
    """Without a page engine to ask (the plugin's BroadcastChannel host is absent), the drop-in worker
    loads timbreamt itself and still answers noteDigger's contract."""
    url, root = notedigger_url
    context = browser.new_context()
    page = context.new_page()
    page.add_init_script("delete window.BroadcastChannel")      # the page hosts no engine; workers keep theirs
    page.route("**/dataProcess/AI/basicamt_worker.js", lambda route: route.fulfill(
        path=str(root / "timbreamt" / "notedigger" / "basicamt_worker.js"), headers={"Content-Type": "text/javascript"}))
    dialogs = _load_into_notedigger(page, url)
    out = page.evaluate("""async () => {
        const bytes = await (await fetch('/__test__/three_mix.wav')).arrayBuffer();
        const buf = await app.audioContext.decodeAudioData(bytes);
        const chBefore = new Set(app.MidiAction.midi.map(n => n.ch));
        await app.Analyser.basicamt(buf);
        const added = app.MidiAction.midi.filter(n => !chBefore.has(n.ch));
        return { added: added.length, chans: [...new Set(added.map(n => n.ch))].length,
                 hosted: window.timbreamtPlugin.hostedJobs };
    }""")
    assert dialogs == []
    assert out["added"] > 10 and out["chans"] == 1 and out["hosted"] == 0
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


# ------------------------------------------------------------------------------ the page as a tool

def notes_and_tracks(d):
    return sorted((n["pitch"], round(n["start"] * 22050 / 256), round(n["end"] * 22050 / 256), t_i)
                  for t_i, t in enumerate(d["tracks"]) for n in t["notes"])


def same_notes_and_assignment(page_json, cli_json):
    a, b = notes_and_tracks(page_json), notes_and_tracks(cli_json)
    assert [x[:3] for x in a] == [x[:3] for x in b] and len(a) > 0
    pairs = {(x[3], y[3]) for x, y in zip(a, b)}
    assert len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs}), pairs
    assert len(page_json["tracks"]) == len(cli_json["tracks"])


@pytest.mark.parametrize("rate", [16000, 22050, 32000, 44100, 48000, 96000])
def test_page_matches_cli_at_every_sample_rate(page, base_url, web_bundle, shipped_models, rate):
    """A WAV at any rate: the page streams it from the file and resamples it in Pyodide with
    timbreamt.core.resample; the CLI pipeline resamples with the same code: identical notes and
    instrument assignment (Septimbre, 3 instruments)."""
    import soxr

    from timbreamt.core.resample import resample
    from timbreamt.runtime.transcriber import Transcriber

    mono, sr = python_mono(REFERENCE / "three_mix.wav")
    recording = soxr.resample(mono, sr, rate).astype(np.float32) if rate != sr else mono   # "a file recorded at rate"
    name = f"rate_{rate}.wav"
    sf.write(web_bundle / "examples" / name, recording, rate, subtype="FLOAT")
    errors = open_page(page, base_url)
    got = page.evaluate("""async (name) => {
        const blob = await (await fetch('examples/' + name)).blob();
        const r = await window.timbreamtPage.transcriber.transcribeFile(blob, { model: 'septimbre', instruments: 3 });
        return { transcription: r.transcription, sampleRate: r.sampleRate };
    }""", name)
    assert got["sampleRate"] == rate and got["transcription"]["sample_rate"] == rate
    # the CLI reads the same file (runtime/audio.py resamples with core/resample.py, in blocks)
    cli = Transcriber(shipped_models / "septimbre.onnx").transcribe(str(web_bundle / "examples" / name), instruments=3)
    assert got["transcription"]["duration"] == pytest.approx(cli.duration, abs=1e-6)
    assert cli.sample_rate == rate
    same_notes_and_assignment(got["transcription"], cli.to_dict())
    # and both equal the one-shot resampler's output fed to the pipeline (streaming is exact)
    read, _ = python_mono(web_bundle / "examples" / name)
    one_shot = Transcriber(shipped_models / "septimbre.onnx").transcribe(resample(read, rate, 44100), sr=44100, instruments=3)
    same_notes_and_assignment(cli.to_dict(), one_shot.to_dict())
    assert errors == []


def test_regrouping_needs_no_model_run(page, base_url, shipped_models):
    """After a Septimbre run, another number of instruments regroups the same notes at once, as the
    CLI would split them; auto's estimate and the neighbouring counts are offered."""
    from timbreamt.runtime.transcriber import Transcriber

    errors = open_page(page, base_url)
    load_and_run(page, REFERENCE / "three_mix.wav", "septimbre", "3")
    assert page.eval_on_selector_all("#tracks tbody tr", "rows => rows.length") == 3
    offered = page.eval_on_selector_all(".regroup-to", "bs => bs.map(b => b.dataset.n)")
    assert {"2", "4", "auto"} <= set(offered)
    page.evaluate("""() => { window.__stages = []; const s = document.getElementById('status');
        new MutationObserver(() => window.__stages.push(s.textContent)).observe(s, { childList: true, characterData: true, subtree: true }); }""")
    page.click(".regroup-to[data-n='2']")
    assert wait_state(page, "done", "error") == "done"
    status = page.inner_text("#status")
    assert status.startswith("Regrouped: 26 notes in 2 tracks"), status
    assert not any("Running the model" in t for t in page.evaluate("window.__stages"))
    shown = page.evaluate("window.timbreamtPage.result")
    mono, _ = python_mono(REFERENCE / "three_mix.wav")
    cli = Transcriber(shipped_models / "septimbre.onnx").transcribe(mono, sr=44100, instruments=2)
    same_notes_and_assignment(shown, cli.to_dict())
    # auto: the estimate is shown with its neighbours
    page.select_option("#instruments", "auto")
    assert wait_state(page, "done", "error") == "done"
    auto = page.evaluate("window.timbreamtPage.autoInstruments")
    assert isinstance(auto, int) and auto >= 1
    assert f"Auto found {auto} instrument" in page.inner_text("#regroup")
    cli_auto = Transcriber(shipped_models / "septimbre.onnx").transcribe(mono, sr=44100, instruments="auto")
    assert len(cli_auto.tracks) == auto
    assert errors == []


def test_state_machine_new_file_cancel_and_invalid_choices(page, base_url, tmp_path):
    errors = open_page(page, base_url)
    assert page.get_attribute("body", "data-state") == "ready"
    # BasicAMT cannot separate instruments: the select is disabled and shows 1
    page.select_option("#model", "basicamt")
    assert page.is_disabled("#instruments") and page.input_value("#instruments") == "1"
    page.select_option("#model", "septimbre")
    assert not page.is_disabled("#instruments")
    load_and_run(page, REFERENCE / "three_mix.wav", "septimbre", "3")
    assert page.is_visible("#result")
    # a new file clears the old result: no roll, no downloads, Play gone
    sf.write(tmp_path / "other.wav", python_mono(REFERENCE / "piano_short.wav")[0], 44100)
    page.set_input_files("#file", str(tmp_path / "other.wav"))
    assert wait_state(page, "loaded", "error") == "loaded"
    assert not page.is_visible("#result") and page.evaluate("window.timbreamtPage.result") is None
    assert "other.wav" in page.inner_text("#status") and "Press Transcribe" in page.inner_text("#status")
    # Cancel stops a long job; the engine restarts and the next run works
    long = tiled_wav(tmp_path / "three_minutes.wav", 3)
    page.set_input_files("#file", str(long))
    assert wait_state(page, "loaded") == "loaded"
    page.click("#run")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Running the model')")
    assert page.is_visible("#cancel")
    page.click("#cancel")
    assert wait_state(page, "cancelled", "loaded") in ("cancelled", "loaded")
    assert wait_state(page, "loaded", "error") == "loaded"
    assert page.inner_text("#status").startswith("Cancelled.")
    assert not page.is_visible("#result") and not page.is_visible("#cancel")
    page.set_input_files("#file", str(REFERENCE / "three_mix.wav"))
    assert wait_state(page, "loaded") == "loaded"
    page.click("#run")
    assert wait_state(page, "done", "error") == "done", page.inner_text("#status")
    assert errors == []


def test_model_load_is_a_stage_and_cold_start(page, base_url, artifacts):
    page.set_default_timeout(TIMEOUT)
    t0 = time.perf_counter()
    errors = open_page(page, base_url)
    cold = time.perf_counter() - t0
    page.evaluate("""() => { window.__stages = []; const s = document.getElementById('status');
        new MutationObserver(() => window.__stages.push(s.textContent)).observe(s, { childList: true, characterData: true, subtree: true }); }""")
    load_and_run(page, REFERENCE / "three_mix.wav", "basicamt")
    stages = page.evaluate("window.__stages")
    assert any(t.startswith("Loading the BasicAMT model") for t in stages), stages
    assert any(t.startswith("Running the model: window 1 of") for t in stages), stages
    assert stages[-1].startswith("Done:")
    record_parity("page cold start s (open -> ready, test run)", round(cold, 2))
    assert errors == []


def test_es_module_api_gives_one_line_errors(page, base_url):
    errors = open_page(page, base_url)
    messages = page.evaluate("""async () => {
        const t = window.timbreamtPage.transcriber;
        const tries = [
            () => t.transcribe(new Float32Array(44100), 44100, { instruments: 0 }),
            () => t.transcribe(new Float32Array(44100), 44100, { instruments: 'three' }),
            () => t.transcribe(new Float32Array(44100), 44100, { model: 'basicamt', instruments: 3 }),
            () => t.transcribe(new Float32Array(44100), 0),
            () => t.transcribe(new Float32Array(0), 44100, { model: 'basicamt' }),
            () => t.transcribe(new Float32Array([0, NaN, 0]), 44100, { model: 'basicamt' }),
            () => t.transcribe(new Float32Array(44100), 44100, { model: 'nope' }),
            () => t.regroup(99),
        ];
        const out = [];
        for (const f of tries) { try { await f(); out.push('no error'); } catch (e) { out.push(String(e.message)); } }
        return out;
    }""")
    assert messages[0] == "instruments must be a whole number from 1 to 16 or 'auto', got 0"
    assert messages[1] == "instruments must be a whole number from 1 to 16 or 'auto', got \"three\""
    assert "cannot separate 3 instruments" in messages[2]
    assert "sampleRate must be" in messages[3]
    assert messages[4] == "audio is empty (0 samples)"
    assert messages[5].startswith("audio contains NaN or infinite samples")
    assert messages[6].startswith("model not found")
    assert "instruments must be" in messages[7]
    for m in messages:
        assert "\n" not in m and "Traceback" not in m and "File \"" not in m, m
    # the page itself: an impossible combination cannot even be chosen (the select is disabled), and a
    # Python error reaching the page shows one line (a Septimbre option out of range through the API)
    msg = page.evaluate("""async () => { try { await window.timbreamtPage.transcriber.transcribe(new Float32Array(44100), 44100,
        { options: { onsetThreshold: 7 } }); return 'no error'; } catch (e) { return e.message; } }""")
    assert "onset" in msg and "\n" not in msg and "Traceback" not in msg, msg
    assert errors == []


def test_file_protocol_says_how_to_serve(page, web_bundle):
    page.goto((web_bundle / "index.html").as_uri())
    page.wait_for_function("document.body.dataset.state === 'error'", timeout=5000)
    status = page.inner_text("#status")
    assert "file://" in status and f"timbreamt serve {web_bundle}" in status


def test_roll_playback_mix_hover_and_track_list(page, base_url, tmp_path):
    import mido

    errors = open_page(page, base_url)
    load_and_run(page, REFERENCE / "three_mix.wav", "septimbre", "3")
    # short files fill the width; the canvas is the size of its box, not of the file
    px = roll_pixels(page)
    assert px["notes"] > 500 and px["cssWidth"] <= 1280
    view = page.evaluate("({ t0: timbreamtRoll.t0, vis: timbreamtRoll.visibleSeconds, d: timbreamtPage.result.duration })")
    assert view["t0"] == 0 and view["vis"] == pytest.approx(view["d"], rel=0.02)
    # hover a note: its pitch name, time and track; click selects it
    note = page.evaluate("""() => { const r = timbreamtRoll; const tr = timbreamtPage.tracks[1]; const n = tr.notes[0];
        const box = r.canvas.getBoundingClientRect();
        return { x: box.left + r.KEY_W + ((n.start + n.end) / 2 - r.t0) * r.pps, y: box.top + r.RULER_H + (r.top - n.pitch + 0.5) * r.rowH,
                 pitch: n.pitch, name: tr.name }; }""")
    page.mouse.move(note["x"], note["y"])
    tip = page.inner_text("#tip")
    assert f"MIDI {note['pitch']}" in tip and note["name"] in tip and "–" in tip
    page.mouse.click(note["x"], note["y"])
    assert page.inner_text("#note-info").startswith("Selected:")
    # playback: the playhead moves; mute and solo act while playing; the recording's level too
    page.click("#play")
    page.wait_for_function("document.body.dataset.playing === 'true' && timbreamtRoll.playhead > 0.3", timeout=10_000)
    gains = "timbreamtPage.player.gains.map(g => g.gain.value)"
    assert page.evaluate(gains) == [1, 1, 1]
    page.click("#tracks tbody tr[data-track='0'] .mute")
    page.wait_for_timeout(50)
    assert page.evaluate(gains) == [0, 1, 1]
    page.click("#tracks tbody tr[data-track='2'] .solo")
    page.wait_for_timeout(50)
    assert page.evaluate(gains) == [0, 0, 1]
    page.fill("#level", "0")
    page.dispatch_event("#level", "input")
    page.wait_for_timeout(50)
    assert page.evaluate("timbreamtPage.player.level.gain.value") == 0
    page.click("#play")
    assert page.get_attribute("body", "data-playing") is None
    # rename and choose a GM program: the MIDI download carries both
    page.fill("#tracks tbody tr[data-track='0'] .track-name", "Violin")
    page.select_option("#tracks tbody tr[data-track='0'] .program", "40")
    with page.expect_download() as dl:
        page.click("#download-midi")
    path = tmp_path / "named.mid"
    dl.value.save_as(str(path))
    mid = mido.MidiFile(str(path))
    names = [m.name for t in mid.tracks for m in t if m.type == "track_name"]
    programs = [m.program for t in mid.tracks for m in t if m.type == "program_change"]
    assert names[1] == "Violin" and programs[0] == 40
    assert errors == []


def test_keyboard_operates_the_main_controls(page, base_url):
    errors = open_page(page, base_url)
    # Tab from the top reaches the file chooser, the example, the options and Transcribe
    order = []
    for _ in range(8):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
    assert order[:4] == ["file", "example", "model", "instruments"], order   # Transcribe is disabled: no file yet
    page.focus("#example")
    page.keyboard.press("Enter")
    assert wait_state(page, "loaded") == "loaded"
    assert page.input_value("#instruments") == "3"        # the example preselects its 3 instruments
    page.focus("#instruments")
    page.keyboard.press("ArrowUp")                       # 3 -> 2, then back
    page.keyboard.press("ArrowDown")
    assert page.input_value("#instruments") == "3"
    page.focus("#run")
    page.keyboard.press("Enter")
    assert wait_state(page, "done", "error") == "done"
    page.focus("#roll")
    before = page.evaluate("({ pps: timbreamtRoll.pps, t0: timbreamtRoll.t0, top: timbreamtRoll.top })")
    page.keyboard.press("+")
    page.keyboard.press("+")
    zoomed = page.evaluate("({ pps: timbreamtRoll.pps, t0: timbreamtRoll.t0 })")
    assert zoomed["pps"] > before["pps"] * 2
    page.keyboard.press("ArrowRight")
    assert page.evaluate("timbreamtRoll.t0") > zoomed["t0"]
    page.keyboard.press("ArrowDown")
    assert page.evaluate("timbreamtRoll.top") < before["top"]
    page.keyboard.press("0")
    assert page.evaluate("timbreamtRoll.pps") == pytest.approx(before["pps"])
    page.keyboard.press(" ")
    page.wait_for_function("document.body.dataset.playing === 'true'", timeout=5000)
    page.keyboard.press(" ")
    page.wait_for_function("document.body.dataset.playing !== 'true'", timeout=5000)
    # wheel: Ctrl zooms around the cursor, plain scrolls time; drag pans
    box = page.locator("#roll").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.keyboard.down("Control")
    page.mouse.wheel(0, -300)
    page.keyboard.up("Control")
    # wheel events are handled asynchronously: wait for their effect (a busy machine takes longer)
    page.wait_for_function(f"timbreamtRoll.pps > {before['pps'] * 1.3}", timeout=5000)
    t0 = page.evaluate("timbreamtRoll.t0")
    page.mouse.wheel(0, 200)
    page.wait_for_function(f"timbreamtRoll.t0 > {t0}", timeout=5000)
    t0 = page.evaluate("timbreamtRoll.t0")
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 150, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    page.wait_for_function(f"timbreamtRoll.t0 < {t0}", timeout=5000)
    assert errors == []


def roll_screenshot_checks(page, artifacts, name):
    """Notes are drawn at the opening view, zoomed out to the whole file, and at its end."""
    counts = {}
    counts["open"] = roll_pixels(page)
    page.screenshot(path=str(artifacts / f"roll_{name}_open.png"))
    page.click("#zoom-fit")
    counts["fit"] = roll_pixels(page)
    page.screenshot(path=str(artifacts / f"roll_{name}_fit.png"))
    page.focus("#roll")
    for _ in range(6):
        page.keyboard.press("+")
    page.keyboard.press("End")
    counts["end"] = roll_pixels(page)
    page.screenshot(path=str(artifacts / f"roll_{name}_end.png"))
    for where, c in counts.items():
        assert c["notes"] > 300, (where, c)
        assert c["width"] <= 1280 * 2 and c["cssWidth"] <= 1280, (where, c)   # the box's size, not the file's
    return counts


@pytest.mark.slow
def test_ten_minute_file_draws_its_roll(page, base_url, artifacts, tmp_path):
    errors = open_page(page, base_url)
    path = tiled_wav(tmp_path / "ten_minutes.wav", 10)
    status = load_and_run(page, path, "septimbre", "3")
    assert "notes in 3 tracks" in status
    assert page.evaluate("timbreamtPage.result.duration") == pytest.approx(600, abs=0.01)
    roll_screenshot_checks(page, artifacts, "10min")
    # the view follows the playhead: start playing near the right edge of a 4 s view
    page.evaluate("() => { const r = timbreamtRoll; r.t0 = 100; r.pps = (r.width - r.KEY_W) / 4; r.clamp(); r.draw(); }")
    box = page.locator("#roll").bounding_box()
    page.mouse.click(box["x"] + box["width"] - 40, box["y"] + 10)          # the ruler: seek there
    start = page.evaluate("timbreamtRoll.playhead")
    assert 103 < start < 104.2
    page.click("#play")
    page.wait_for_function("timbreamtRoll.t0 > 102 && timbreamtRoll.playhead > timbreamtRoll.t0 && "
                           "timbreamtRoll.playhead < timbreamtRoll.t0 + timbreamtRoll.visibleSeconds", timeout=10_000)
    page.click("#play")
    assert errors == []


@pytest.mark.slow
def test_sixty_minute_file_transcribes_without_crashing_the_tab(browser, base_url, artifacts, tmp_path):
    """An hour of audio (a 318 MB WAV): read from the file in pieces, never whole in memory."""
    path = tiled_wav(tmp_path / "sixty_minutes.wav", 60)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    crashed = []
    page.on("crash", lambda p: crashed.append(True))
    errors = open_page(page, base_url)
    before = RendererMemory.current()
    t0 = time.perf_counter()
    with RendererMemory() as mem:
        status = load_and_run(page, path, "basicamt", timeout=900_000)
    seconds = time.perf_counter() - t0
    assert not crashed and status.startswith("Done:")
    assert page.evaluate("timbreamtPage.result.duration") == pytest.approx(3600, abs=0.01)
    n_notes = page.evaluate("timbreamtPage.tracks[0].notes.length")
    assert n_notes > 10_000
    roll_screenshot_checks(page, artifacts, "60min")
    record_parity("60 min basicamt page", {"seconds": round(seconds, 1), "notes": n_notes,
                                           "renderer_peak_rss_mb": round(mem.peak / 2**20),
                                           "renderer_rss_before_mb": round(before / 2**20)})
    # bounded: far below the 635 MB the hour's samples alone would take as float32
    assert mem.peak - before < 600 * 2**20, mem.peak
    assert errors == []
    context.close()


def test_page_screenshot_for_the_readme(page, base_url, artifacts):
    """The bundled example in 3 tracks, as docs/page.png shows it (linked from the README). Written to
    test-artifacts/; TIMBREAMT_UPDATE_SCREENSHOT=1 also replaces docs/page.png."""
    from conftest import ROOT

    errors = open_page(page, base_url)
    page.click("#example")
    assert wait_state(page, "loaded") == "loaded"
    page.click("#run")
    assert wait_state(page, "done", "error") == "done"
    assert page.eval_on_selector_all("#tracks tbody tr", "rows => rows.length") == 3
    assert roll_pixels(page)["notes"] > 500
    page.screenshot(path=str(artifacts / "page.png"), full_page=True)
    if os.environ.get("TIMBREAMT_UPDATE_SCREENSHOT") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copy(artifacts / "page.png", ROOT / "docs" / "page.png")
    assert errors == []


def test_compressed_files_decode_at_their_own_rate(page, base_url, web_bundle, shipped_models):
    """FLAC, Ogg Vorbis, Opus and MP3 decode in the page at the rate libsndfile reads them (no browser
    resampling), so the CLI's resampler does the rest; lossless FLAC at 48 kHz gives the CLI's notes."""
    import soxr

    from timbreamt.runtime.transcriber import Transcriber

    mono, sr = python_mono(REFERENCE / "three_mix.wav")
    cases = [("flac", "FLAC", "PCM_16", 48000), ("ogg", "OGG", "VORBIS", 22050), ("opus", "OGG", "OPUS", 24000),
             ("mp3", "MP3", "MPEG_LAYER_III", 32000), ("flac", "FLAC", "PCM_24", 96000)]
    names = []
    for ext, fmt, sub, rate in cases:
        name = f"coded_{rate}_{sub}.{ext}"
        sf.write(web_bundle / "examples" / name, soxr.resample(mono, sr, rate).astype(np.float32), rate, format=fmt, subtype=sub)
        names.append(name)
    errors = open_page(page, base_url)
    got = page.evaluate("""async (names) => {
        const { decodeAudio } = await import('./timbreamt.js');
        const out = {};
        for (const n of names) {
            const a = await decodeAudio(await (await fetch('examples/' + n)).arrayBuffer());
            out[n] = { rate: a.sampleRate, frames: a.samples.length, samples: n.endsWith('.flac') ? Array.from(a.samples) : null };
        }
        return out;
    }""", names)
    for name, (ext, fmt, sub, rate) in zip(names, cases):
        info = sf.info(str(web_bundle / "examples" / name))
        assert got[name]["rate"] == info.samplerate == rate, name
        assert abs(got[name]["frames"] - info.frames) <= 0.01 * info.frames + 2000, (name, got[name]["frames"], info.frames)
    # lossless: the very samples libsndfile reads, so the same notes after the same resampler
    flac = names[0]
    want, want_sr = python_mono(web_bundle / "examples" / flac)
    np.testing.assert_array_equal(np.array(got[flac]["samples"], np.float32), want)
    page_json = page.evaluate("""async (name) => {
        const blob = await (await fetch('examples/' + name)).blob();
        return (await window.timbreamtPage.transcriber.transcribeFile(blob, { model: 'septimbre', instruments: 3 })).transcription;
    }""", flac)
    cli = Transcriber(shipped_models / "septimbre.onnx").transcribe(str(web_bundle / "examples" / flac), instruments=3)
    same_notes_and_assignment(page_json, cli.to_dict())
    assert errors == []
