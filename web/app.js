/* The page: choose audio, transcribe in the worker, draw a piano roll per instrument, play, download. */
import { createTranscriber, decodeAudio } from './timbreamt.js';

const COLOURS = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4', '#f032e6', '#bfef45'];
const $ = (id) => document.getElementById(id);
const state = { transcriber: null, audio: null, fileName: 'transcription', result: null, muted: new Set(), playing: null };

function setStatus(text, isError = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', isError);
}

function onProgress(p) {
  const stage = p.stage === 'inference' ? `running the model (window ${p.done + 1} of ${p.total})` : `finding ${p.stage}`;
  setStatus(`Transcribing: ${stage}…`);
  $('progress').value = p.stage === 'inference' ? 0.1 + 0.8 * (p.done / p.total) : 0.95;
}

async function start() {
  if (typeof WebAssembly !== 'object') {
    setStatus('This browser has no WebAssembly: timbreamt cannot run here.', true);
    return;
  }
  try {
    state.transcriber = await createTranscriber({ baseUrl: new URL('.', import.meta.url).href, onProgress });
    const threads = state.transcriber.info.threads;
    setStatus(`Ready (${threads} thread${threads > 1 ? 's' : ''}). Choose an audio file.`);
    document.body.dataset.ready = 'true';
  } catch (e) {
    setStatus(`Could not start the engine: ${e.message}`, true);
    return;
  }
  const probe = await fetch('examples/index.json').catch(() => null);
  if (probe && probe.ok) {
    const list = await probe.json();
    if (list.length) {
      $('example').hidden = false;
      $('example').textContent = `Use the bundled example (${list[0]})`;
      $('example').onclick = async () => loadFile(new File([await (await fetch(`examples/${list[0]}`)).blob()], list[0], { type: 'audio/wav' }));
    }
  }
}

async function loadFile(file) {
  setStatus(`Decoding ${file.name}…`);
  $('progress').value = 0.05;
  try {
    const decoded = await decodeAudio(await file.arrayBuffer());
    if (!decoded.samples.length) throw new Error('the file holds no audio');
    state.audio = { samples: decoded.samples, sampleRate: decoded.sampleRate };
    const buffer = { duration: decoded.samples.length / decoded.sampleRate };
    state.fileName = file.name.replace(/\.[^.]+$/, '') || 'transcription';
    $('run').disabled = false;
    setStatus(`${file.name}: ${(buffer.duration).toFixed(1)} s loaded. Press Transcribe.`);
    document.body.dataset.loaded = 'true';
  } catch (e) {
    state.audio = null;
    $('run').disabled = true;
    setStatus(`Cannot read ${file.name}: not a supported audio file (${e.message || e}).`, true);
  }
}

async function run() {
  if (!state.audio) return;
  stopPlayback();
  $('run').disabled = true;
  const instruments = $('instruments').value === 'auto' ? 'auto' : Number($('instruments').value);
  try {
    const t0 = performance.now();
    const detail = await state.transcriber.transcribeDetailed(state.audio.samples, state.audio.sampleRate,
      { model: $('model').value, instruments });
    state.result = detail.transcription;
    state.muted.clear();
    const n = state.result.tracks.reduce((s, t) => s + t.notes.length, 0);
    const secs = (performance.now() - t0) / 1000;
    setStatus(`Done: ${n} notes in ${state.result.tracks.length} track(s) in ${secs.toFixed(1)} s.` +
      (detail.warnings.length ? ` Note: ${detail.warnings.join('; ')}` : ''));
    $('progress').value = 1;
    setDownloads(detail.midi, state.result);
    showResult();
    document.body.dataset.done = 'true';
  } catch (e) {
    setStatus(`Transcription failed: ${e.message}`, true);
  } finally {
    $('run').disabled = false;
  }
}

function setDownloads(midi, result) {
  for (const id of ['download-midi', 'download-json']) if ($(id).href) URL.revokeObjectURL($(id).href);
  $('download-midi').href = URL.createObjectURL(new Blob([midi], { type: 'audio/midi' }));
  $('download-midi').download = `${state.fileName}.mid`;
  $('download-json').href = URL.createObjectURL(new Blob([JSON.stringify(result, null, 1)], { type: 'application/json' }));
  $('download-json').download = `${state.fileName}.json`;
}

function showResult() {
  $('result').hidden = false;
  const box = $('tracks');
  box.textContent = '';
  state.result.tracks.forEach((t, i) => {
    const label = document.createElement('label');
    const cb = document.createElement('input');
    cb.type = 'checkbox';
    cb.checked = true;
    cb.onchange = () => { if (cb.checked) state.muted.delete(i); else state.muted.add(i); draw(); };
    const sw = document.createElement('span');
    sw.className = 'swatch';
    sw.style.background = COLOURS[i % COLOURS.length];
    label.append(cb, sw, `${t.name} (${t.notes.length})`);
    box.append(label);
  });
  $('summary').textContent = `${state.result.model}, ${state.result.duration.toFixed(1)} s of audio.`;
  draw();
}

function draw(playhead = null) {
  const r = state.result;
  if (!r) return;
  const canvas = $('roll');
  const pxPerSec = Number($('zoom').value);
  const all = r.tracks.flatMap((t) => t.notes);
  const lo = all.length ? Math.min(...all.map((n) => n.pitch)) - 2 : 48;
  const hi = all.length ? Math.max(...all.map((n) => n.pitch)) + 2 : 84;
  canvas.width = Math.max(300, Math.ceil(r.duration * pxPerSec));
  const rowH = canvas.height / (hi - lo + 1);
  const g = canvas.getContext('2d');
  g.fillStyle = '#1b1d24';
  g.fillRect(0, 0, canvas.width, canvas.height);
  for (let p = lo; p <= hi; p += 1) {           // black-key rows and C lines
    const y = (hi - p) * rowH;
    if ([1, 3, 6, 8, 10].includes(p % 12)) { g.fillStyle = '#22252e'; g.fillRect(0, y, canvas.width, rowH); }
    if (p % 12 === 0) { g.fillStyle = '#3a3e4a'; g.fillRect(0, y + rowH - 1, canvas.width, 1); }
  }
  g.fillStyle = '#444a58';
  for (let s = 0; s < r.duration; s += 1) g.fillRect(s * pxPerSec, 0, 1, canvas.height);
  r.tracks.forEach((t, i) => {
    g.fillStyle = COLOURS[i % COLOURS.length];
    g.globalAlpha = state.muted.has(i) ? 0.2 : 0.9;
    for (const n of t.notes) {
      g.fillRect(n.start * pxPerSec, (hi - n.pitch) * rowH + 1, Math.max(2, (n.end - n.start) * pxPerSec), Math.max(2, rowH - 2));
    }
  });
  g.globalAlpha = 1;
  if (playhead !== null) { g.fillStyle = '#fff'; g.fillRect(playhead * pxPerSec, 0, 2, canvas.height); }
}

/* Playback: the audio itself plus a soft synth voice per audible note. */
function play() {
  if (state.playing) { stopPlayback(); return; }
  const ctx = new AudioContext();
  const t0 = ctx.currentTime + 0.1;
  const buf = ctx.createBuffer(1, state.audio.samples.length, state.audio.sampleRate);
  buf.copyToChannel(state.audio.samples, 0);
  const src = ctx.createBufferSource();
  const audioGain = ctx.createGain();
  audioGain.gain.value = 0.5;
  src.buffer = buf;
  src.connect(audioGain).connect(ctx.destination);
  src.start(t0);
  const synthGain = ctx.createGain();
  synthGain.gain.value = 0.12;
  synthGain.connect(ctx.destination);
  state.result.tracks.forEach((t, i) => {
    if (state.muted.has(i)) return;
    for (const n of t.notes) {
      const osc = ctx.createOscillator();
      const env = ctx.createGain();
      osc.type = ['triangle', 'sawtooth', 'square', 'sine'][i % 4];
      osc.frequency.value = 440 * 2 ** ((n.pitch - 69) / 12);
      const a = t0 + n.start;
      const b = t0 + Math.max(n.end, n.start + 0.05);
      env.gain.setValueAtTime(0, a);
      env.gain.linearRampToValueAtTime(n.velocity / 127 * (i % 4 === 1 || i % 4 === 2 ? 0.3 : 1), a + 0.01);
      env.gain.setTargetAtTime(0, b, 0.03);
      osc.connect(env).connect(synthGain);
      osc.start(a);
      osc.stop(b + 0.2);
    }
  });
  state.playing = { ctx, t0, timer: null };
  $('play').textContent = '■ Stop';
  const tick = () => {
    if (!state.playing) return;
    const t = ctx.currentTime - t0;
    if (t > state.result.duration + 0.3) { stopPlayback(); return; }
    draw(Math.max(0, t));
    state.playing.timer = requestAnimationFrame(tick);
  };
  tick();
}

function stopPlayback() {
  if (!state.playing) return;
  cancelAnimationFrame(state.playing.timer);
  state.playing.ctx.close();
  state.playing = null;
  $('play').textContent = '▶ Play';
  draw();
}

$('file').addEventListener('change', (e) => { if (e.target.files[0]) loadFile(e.target.files[0]); });
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  if (e.dataTransfer.files[0]) loadFile(e.dataTransfer.files[0]);
});
$('run').addEventListener('click', run);
$('play').addEventListener('click', play);
$('zoom').addEventListener('input', () => draw());
window.timbreamtPage = state;   // for tests and curious users
start();
