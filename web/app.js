/* The page: choose audio, transcribe in the worker, show a piano roll per instrument, play, regroup,
 * download. States (body[data-state]): starting -> ready -> loading -> loaded -> running -> done, and
 * error / cancelled from any of them; a new file clears the old result. */
import { createTranscriber, decodeAudio, loadConstants, wavInfo } from './timbreamt.js';
import { GM_PROGRAMS } from './gm.js';

const COLOURS = ['#e6194b', '#3cb44b', '#4f8bff', '#f58231', '#c77dff', '#42d4f4', '#f032e6', '#bfef45',
                 '#fabed4', '#469990', '#dcbeff', '#9a6324', '#fffac8', '#aaffc3', '#ffd8b1', '#a9a9a9'];
const NAMES = ['C', 'C♯', 'D', 'D♯', 'E', 'F', 'F♯', 'G', 'G♯', 'A', 'A♯', 'B'];
const BLACK = new Set([1, 3, 6, 8, 10]);
const $ = (id) => document.getElementById(id);
let K = null;   // constants.json: the system's numbers, from timbreamt.core.constants

const state = {
  transcriber: null, phase: 'starting', file: null, audio: null, info: null, fileName: 'transcription', example: null,
  result: null, resultModel: null, warnings: [], autoInstruments: null, regroupable: false,
  tracks: [],             // [{name, colour, program, mute, solo, notes (sorted by start), maxDur}]
  selected: null, playing: null, runStarted: 0,
};

export const pitchName = (p) => `${NAMES[p % 12]}${Math.floor(p / 12) - 1}`;
const fmtTime = (t) => `${Math.floor(t / 60)}:${(t % 60).toFixed(1).padStart(4, '0')}`;

/* ------------------------------------------------------------------ state and status */

function setPhase(phase, text, { error = false, progress = null } = {}) {
  state.phase = phase;
  document.body.dataset.state = phase;
  $('status').textContent = text;
  $('status').classList.toggle('error', error);
  const bar = $('progress');
  if (progress === null) bar.removeAttribute('value'); else bar.value = progress;
  bar.hidden = phase !== 'starting' && phase !== 'running' && phase !== 'loading';
  const busy = phase === 'starting' || phase === 'running' || phase === 'loading' || phase === 'cancelled';
  $('file').disabled = busy;
  $('drop').classList.toggle('disabled', busy);
  $('example').disabled = busy;
  $('model').disabled = busy;
  $('run').disabled = busy || !state.file;
  $('cancel').hidden = phase !== 'running';
  updateInstrumentsSelect();
  if (phase === 'error') $('progress').value = 0;
}

/* BasicAMT has no timbre embedding: one track only, the select shows it and cannot change. */
function updateInstrumentsSelect() {
  const select = $('instruments');
  const basic = $('model').value === 'basicamt';
  const busy = ['starting', 'running', 'loading', 'cancelled'].includes(state.phase);
  select.disabled = basic || busy;
  if (basic) select.value = '1';
  select.title = basic ? 'BasicAMT finds notes only: choose Septimbre to separate instruments'
    : 'How many instruments to separate the notes into';
}

function stageText(p) {
  const model = (p.model || $('model').value) === 'basicamt' ? 'BasicAMT' : 'Septimbre';
  if (p.stage === 'model') return p.done ? `Loaded the ${model} model.` : `Loading the ${model} model (first run only)…`;
  if (p.stage === 'inference') return `Running the model: window ${p.done + 1} of ${p.total}…`;
  if (p.stage === 'clustering') return 'Finding notes and grouping them into instruments…';
  return 'Finding notes…';
}

function onProgress(p) {
  if (state.phase !== 'running') return;
  const fraction = p.stage === 'model' ? 0.02 : p.stage === 'inference' ? 0.05 + 0.85 * (p.done / p.total) : 0.93;
  setPhase('running', stageText(p), { progress: fraction });
}

/* ------------------------------------------------------------------ start-up */

async function start() {
  setPhase('starting', 'Loading the engine (onnxruntime-web, Python and numpy)…');
  if (typeof WebAssembly !== 'object') {
    setPhase('error', 'This browser has no WebAssembly: timbreamt cannot run here.', { error: true });
    return;
  }
  try {
    K = await loadConstants(new URL('.', import.meta.url).href);
    state.transcriber = await createTranscriber({ baseUrl: new URL('.', import.meta.url).href, onProgress });
  } catch (e) {
    console.error(e);
    setPhase('error', `Could not start the engine: ${oneLine(e)}`, { error: true });
    return;
  }
  for (let n = 1; n <= Math.min(8, K.MAX_INSTRUMENTS); n += 1) $('instruments').add(new Option(String(n), String(n)));
  const threads = state.transcriber.info.threads;
  document.body.dataset.ready = 'true';
  setPhase('ready', `Ready (${threads} thread${threads > 1 ? 's' : ''}). Choose an audio file${await setUpExample() ? ' or use the bundled example' : ''}.`);
  // load the default model while the user picks a file (a transcription started meanwhile waits for it
  // and shows it as its first stage)
  state.preloading = $('model').value;
  state.transcriber.preload(state.preloading)
    .catch((e) => console.warn('preloading the model:', oneLine(e)))
    .finally(() => { state.preloading = null; });
}

async function setUpExample() {
  const probe = await fetch('examples/index.json').catch(() => null);
  if (!probe || !probe.ok) return false;
  const list = (await probe.json()).map((e) => (typeof e === 'string' ? { name: e } : e));
  if (!list.length) return false;
  const ex = list[0];
  $('example').hidden = false;
  $('example').textContent = `Use the bundled example (${ex.name}${ex.instruments ? `, ${ex.instruments} instruments` : ''})`;
  $('example').onclick = async () => {
    const blob = await (await fetch(`examples/${ex.name}`)).blob();
    // the example's own MIDI says how many instruments play: preselect it, so the separation shows
    if (ex.instruments) { $('model').value = 'septimbre'; $('instruments').value = String(ex.instruments); }
    await loadFile(new File([blob], ex.name, { type: blob.type || 'audio/wav' }));
  };
  return true;
}

const oneLine = (e) => String((e && e.message) || e).split('\n')[0];

/* ------------------------------------------------------------------ file */

function clearResult() {
  stopPlayback();
  state.result = null;
  state.tracks = [];
  state.selected = null;
  state.autoInstruments = null;
  state.regroupable = false;
  $('result').hidden = true;
  $('regroup').hidden = true;
  $('tracks').tBodies[0].textContent = '';
  delete document.body.dataset.done;
  if (state.audioUrl) { URL.revokeObjectURL(state.audioUrl); state.audioUrl = null; }
  if (state.player) { state.player.close(); state.player = null; }
}

async function loadFile(file) {
  clearResult();
  state.file = null;
  state.audio = null;
  delete document.body.dataset.loaded;
  setPhase('loading', `Reading ${file.name}…`);
  try {
    if (!file.size) throw new Error('the file is empty (0 bytes)');
    let info = await wavInfo(file);
    if (info) {
      state.audio = null;             // a WAV is streamed to the worker at transcription time
    } else {
      const decoded = await decodeAudio(await file.arrayBuffer());
      state.audio = decoded;
      info = { sampleRate: decoded.sampleRate, channels: decoded.channels, duration: decoded.samples.length / decoded.sampleRate };
    }
    if (!info.duration) throw new Error('the file holds no audio');
    state.file = file;
    state.info = info;
    state.fileName = file.name.replace(/\.[^.]+$/, '') || 'transcription';
    document.body.dataset.loaded = 'true';
    const ch = info.channels === 1 ? 'mono' : info.channels === 2 ? 'stereo' : `${info.channels} channels`;
    setPhase('loaded', `${file.name}: ${fmtTime(info.duration)} (${info.sampleRate / 1000} kHz, ${ch}). Press Transcribe.`);
  } catch (e) {
    console.error(e);
    setPhase('error', `Cannot read ${file.name}: ${/supported/.test(oneLine(e)) ? oneLine(e) : `not a supported audio file (${oneLine(e)})`}.`, { error: true });
  }
}

/* ------------------------------------------------------------------ transcription */

function instrumentsChoice() {
  const v = $('instruments').value;
  return $('model').value === 'basicamt' ? 1 : v === 'auto' ? 'auto' : Number(v);
}

async function run() {
  if (!state.file || state.phase === 'running') return;
  const file = state.file;
  const model = $('model').value;
  clearResult();
  state.runStarted = performance.now();
  // a transcription started while the default model still loads waits for it: say so
  setPhase('running', state.preloading ? stageText({ stage: 'model', done: 0, model: state.preloading }) : 'Starting…', { progress: 0 });
  try {
    const opts = { model, instruments: instrumentsChoice(), keepEmbeddings: model === 'septimbre' };
    const detail = state.audio
      ? await state.transcriber.transcribeDetailed(state.audio.samples, state.audio.sampleRate, opts)
      : await state.transcriber.transcribeFile(file, opts);
    if (state.file !== file) return;                   // another file was chosen meanwhile
    state.resultModel = model;
    showResult(detail, (performance.now() - state.runStarted) / 1000);
  } catch (e) {
    if (oneLine(e) === 'cancelled') return;
    console.error(e);
    setPhase('error', `Transcription failed: ${oneLine(e)}`, { error: true });
  }
}

async function cancel() {
  if (state.phase !== 'running') return;
  setPhase('cancelled', 'Cancelled. Restarting the engine…');
  clearResult();               // the new engine holds no job: nothing shown may claim otherwise
  try {
    await state.transcriber.cancel();
    setPhase(state.file ? 'loaded' : 'ready', 'Cancelled. Press Transcribe to start again.');
  } catch (e) {
    setPhase('error', `Could not restart the engine: ${oneLine(e)}`, { error: true });
  }
}

/* Another number of instruments for the notes on screen: regrouped in the worker, no model run. */
async function regroup() {
  if (!state.result || !state.regroupable || state.resultModel !== 'septimbre' || state.phase === 'running') return;
  const wanted = instrumentsChoice();
  const t0 = performance.now();
  setPhase('running', `Regrouping the notes into ${wanted === 'auto' ? 'an estimated number of' : wanted} instrument${wanted === 1 ? '' : 's'}…`, { progress: 0.5 });
  try {
    const detail = await state.transcriber.regroup(wanted);
    showResult(detail, (performance.now() - t0) / 1000, true);
  } catch (e) {
    if (oneLine(e) === 'cancelled') return;
    setPhase('error', `Regrouping failed: ${oneLine(e)}`, { error: true });
  }
}

function showResult(detail, seconds, regrouped = false) {
  stopPlayback();
  state.result = detail.transcription;
  state.warnings = detail.warnings || [];
  state.regroupable = !!detail.regroupable;
  if (detail.autoInstruments != null) state.autoInstruments = detail.autoInstruments;
  state.selected = null;
  state.tracks = state.result.tracks.map((t, i) => {
    const notes = t.notes.slice().sort((a, b) => a.start - b.start);
    return { name: t.name, colour: COLOURS[i % COLOURS.length], program: 0, mute: false, solo: false, notes,
             maxDur: notes.reduce((m, n) => Math.max(m, n.end - n.start), 0) };
  });
  const n = state.tracks.reduce((s, t) => s + t.notes.length, 0);
  const what = `${n} note${n === 1 ? '' : 's'} in ${state.tracks.length} track${state.tracks.length === 1 ? '' : 's'}`;
  const verb = regrouped ? 'Regrouped' : 'Done';
  setPhase('done', `${verb}: ${what} in ${seconds.toFixed(1)} s.` + (state.warnings.length ? ` Note: ${state.warnings.join('; ')}` : ''),
           { progress: 1 });
  $('result').hidden = false;
  renderTracks();
  renderRegroup();
  const r = state.result;
  $('summary').textContent = `${r.model}, ${fmtTime(r.duration)} of audio at ${r.sample_rate} Hz, ${what}.`;
  roll.reset();
  if (state.player) state.player.close();
  state.player = null;
  document.body.dataset.done = 'true';
}

/* What auto found, and the neighbouring counts one click away. */
function renderRegroup() {
  const box = $('regroup');
  box.textContent = '';
  box.hidden = !(state.regroupable && state.resultModel === 'septimbre');
  if (box.hidden) return;
  const k = state.tracks.length;
  const lead = document.createElement('span');
  lead.textContent = state.autoInstruments != null
    ? `Auto found ${state.autoInstruments} instrument${state.autoInstruments === 1 ? '' : 's'}; showing ${k}. Try:`
    : `Showing ${k} instrument${k === 1 ? '' : 's'}. Try:`;
  box.append(lead);
  const options = new Set([k - 1, k + 1, state.autoInstruments == null ? 'auto' : null]);
  if (state.autoInstruments != null && state.autoInstruments !== k) options.add(state.autoInstruments);
  for (const n of [...options].filter((v) => v === 'auto' || (v >= 1 && v <= Math.min(8, K.MAX_INSTRUMENTS)))
    .sort((a, b) => (a === 'auto') - (b === 'auto') || a - b)) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'regroup-to';
    b.dataset.n = String(n);
    b.textContent = n === 'auto' ? 'auto' : `${n}`;
    b.onclick = () => { $('instruments').value = String(n); regroup(); };
    box.append(b);
  }
}

/* ------------------------------------------------------------------ track list */

function audible(i) {
  const anySolo = state.tracks.some((t) => t.solo);
  const t = state.tracks[i];
  return anySolo ? t.solo : !t.mute;
}

function renderTracks() {
  const body = $('tracks').tBodies[0];
  body.textContent = '';
  state.tracks.forEach((t, i) => {
    const tr = body.insertRow();
    tr.dataset.track = String(i);
    const sw = document.createElement('span');
    sw.className = 'swatch';
    sw.style.background = t.colour;
    tr.insertCell().append(sw);
    const name = document.createElement('input');
    name.type = 'text';
    name.value = t.name;
    name.className = 'track-name';
    name.setAttribute('aria-label', `Name of track ${i + 1}`);
    name.oninput = () => { t.name = name.value.trim() || `Track ${i + 1}`; roll.draw(); };
    tr.insertCell().append(name);
    tr.insertCell().textContent = String(t.notes.length);
    for (const key of ['mute', 'solo']) {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = key;
      b.textContent = key === 'mute' ? 'M' : 'S';
      b.setAttribute('aria-label', `${key === 'mute' ? 'Mute' : 'Solo'} ${t.name}`);
      b.setAttribute('aria-pressed', String(t[key]));
      b.onclick = () => {
        t[key] = !t[key];
        b.setAttribute('aria-pressed', String(t[key]));
        applyMix();
      };
      tr.insertCell().append(b);
    }
    const prog = document.createElement('select');
    prog.className = 'program';
    prog.setAttribute('aria-label', `MIDI instrument of track ${i + 1}`);
    GM_PROGRAMS.forEach((p, j) => prog.add(new Option(`${j + 1} ${p}`, String(j))));
    prog.value = String(t.program);
    prog.onchange = () => { t.program = Number(prog.value); };
    tr.insertCell().append(prog);
  });
  applyMix();
}

/* Mute/solo: the roll dims silent tracks, the player's per-track gains change now (during playback too). */
function applyMix() {
  [...$('tracks').tBodies[0].rows].forEach((row, i) => row.classList.toggle('silent', !audible(i)));
  if (state.player) state.player.mix();
  roll.draw();
}

/* The result as shown: the user's track names. */
function shownResult() {
  return { ...state.result, tracks: state.result.tracks.map((t, i) => ({ ...t, name: state.tracks[i].name })) };
}

async function download(kind) {
  if (!state.result) return;
  try {
    let blob;
    if (kind === 'json') {
      blob = new Blob([JSON.stringify(shownResult(), null, 1)], { type: 'application/json' });
    } else {
      const files = await state.transcriber.exportFiles(shownResult(), state.tracks.map((t) => t.program));
      blob = kind === 'midi' ? new Blob([files.midi], { type: 'audio/midi' }) : new Blob([files.csv], { type: 'text/csv' });
    }
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = `${state.fileName}.${kind === 'midi' ? 'mid' : kind}`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  } catch (e) {
    console.error(e);
    setPhase('error', `Download failed: ${oneLine(e)}`, { error: true });
  }
}

/* ------------------------------------------------------------------ playback */

/* The original recording streams from the file through an <audio> element (an hour never has to be
 * decoded into memory), with a level; each track's notes are a soft synth voice behind its own gain,
 * so mute and solo act at once. Notes are scheduled a little ahead as playback advances. */
class Player {
  constructor(file, tracks) {
    this.ctx = new AudioContext();
    this.url = URL.createObjectURL(file);
    this.el = new Audio(this.url);
    this.el.preload = 'auto';
    this.source = this.ctx.createMediaElementSource(this.el);
    this.level = this.ctx.createGain();
    this.source.connect(this.level).connect(this.ctx.destination);
    this.synth = this.ctx.createGain();
    this.synth.gain.value = 0.12;
    this.synth.connect(this.ctx.destination);
    this.gains = tracks.map(() => { const g = this.ctx.createGain(); g.connect(this.synth); return g; });
    this.tracks = tracks;
    this.next = tracks.map(() => 0);
    this.voices = new Set();
    this.timer = null;
    this.setLevel(Number($('level').value));
    this.mix();
  }

  get time() { return this.el.currentTime; }

  mix() {
    const now = this.ctx.currentTime;
    this.gains.forEach((g, i) => { g.gain.cancelScheduledValues(now); g.gain.setValueAtTime(audible(i) ? 1 : 0, now); });
  }

  setLevel(v) { this.level.gain.setValueAtTime(v, this.ctx.currentTime); }

  async play(from) {
    await this.ctx.resume();
    this.seek(from);
    await this.el.play();
    this.timer = setInterval(() => this.schedule(), 50);
    this.schedule();
  }

  seek(t) {
    this.silence();
    this.el.currentTime = t;
    this.next = this.tracks.map((tr) => firstEndingAfter(tr.notes, t, tr.maxDur));
  }

  /* voices for the notes starting in the next 0.3 s */
  schedule() {
    const now = this.el.currentTime;
    const horizon = now + 0.3;
    const ctxNow = this.ctx.currentTime;
    this.tracks.forEach((tr, i) => {
      const notes = tr.notes;
      let j = this.next[i];
      for (; j < notes.length && notes[j].start < horizon; j += 1) {
        const n = notes[j];
        if (n.end < now) continue;
        this.voice(i, n, ctxNow + Math.max(0, n.start - now), ctxNow + Math.max(0.05, n.end - now));
      }
      this.next[i] = j;
    });
  }

  voice(i, n, a, b) {
    const osc = this.ctx.createOscillator();
    const env = this.ctx.createGain();
    osc.type = ['triangle', 'sawtooth', 'square', 'sine'][i % 4];
    osc.frequency.value = 440 * 2 ** ((n.pitch - 69) / 12);
    env.gain.setValueAtTime(0, a);
    env.gain.linearRampToValueAtTime(n.velocity / 127 * (i % 4 === 1 || i % 4 === 2 ? 0.3 : 1), a + 0.01);
    env.gain.setTargetAtTime(0, b, 0.03);
    osc.connect(env).connect(this.gains[i]);
    osc.start(a);
    osc.stop(b + 0.2);
    this.voices.add(osc);
    osc.onended = () => { this.voices.delete(osc); env.disconnect(); };
  }

  silence() { for (const v of this.voices) { try { v.stop(); } catch (e) { /* not started */ } } this.voices.clear(); }

  pause() {
    clearInterval(this.timer);
    this.timer = null;
    this.el.pause();
    this.silence();
  }

  close() {
    this.pause();
    this.ctx.close();
    URL.revokeObjectURL(this.url);
  }
}

/* index of the first note (sorted by start) that may still sound at time t */
function firstEndingAfter(notes, t, maxDur) {
  let lo = 0;
  let hi = notes.length;
  const from = t - maxDur;
  while (lo < hi) { const m = (lo + hi) >> 1; if (notes[m].start < from) lo = m + 1; else hi = m; }
  while (lo < notes.length && notes[lo].end < t) lo += 1;
  return lo;
}

async function togglePlay() {
  if (!state.result || !state.file) return;
  if (state.playing) { stopPlayback(); return; }
  if (!state.player) state.player = new Player(state.file, state.tracks);
  const from = roll.playhead >= state.result.duration - 0.05 ? 0 : roll.playhead;
  state.playing = true;
  $('play').textContent = '❚❚ Pause';
  document.body.dataset.playing = 'true';
  try {
    await state.player.play(from);
  } catch (e) {
    console.error(e);
    stopPlayback();
    $('note-info').textContent = `Cannot play this file here: ${oneLine(e)}`;
    return;
  }
  state.player.el.onended = () => { stopPlayback(); roll.playhead = 0; };
  const tick = () => {
    if (!state.playing) return;
    roll.follow(state.player.time);
    state.rafId = requestAnimationFrame(tick);
  };
  tick();
}

function stopPlayback() {
  if (!state.playing) return;
  state.playing = false;
  cancelAnimationFrame(state.rafId);
  if (state.player) { roll.playhead = state.player.time; state.player.pause(); }
  $('play').textContent = '▶ Play';
  delete document.body.dataset.playing;
  roll.draw();
}

/* ------------------------------------------------------------------ piano roll */

/* Draws only what is visible, into a canvas the size of its box (any file length, any zoom: a
 * canvas as wide as the file would exceed Chromium's 65,535 px limit beyond ~9 minutes). */
const roll = {
  canvas: $('roll'), t0: 0, pps: 100, top: 0, rowH: 10, playhead: 0,
  KEY_W: 46, RULER_H: 22, queued: false,

  get width() { return this.canvas.clientWidth; },
  get height() { return this.canvas.clientHeight; },
  get visibleSeconds() { return (this.width - this.KEY_W) / this.pps; },
  get rows() { return (this.height - this.RULER_H) / this.rowH; },
  get duration() { return state.result ? state.result.duration : 1; },
  minPps() { return Math.max(0.05, (this.width - this.KEY_W) / Math.max(1, this.duration)); },

  reset() {
    const all = state.tracks.flatMap((t) => t.notes);
    let lo = K.MIDI_MIN + 24;          // an empty result shows C3..C6
    let hi = lo + 36;
    if (all.length) {
      lo = all.reduce((m, n) => Math.min(m, n.pitch), 127) - 2;
      hi = all.reduce((m, n) => Math.max(m, n.pitch), 0) + 2;
    }
    lo = Math.max(K.MIDI_MIN - 12, lo);
    hi = Math.min(K.MIDI_MAX + 12, Math.max(hi, lo + 12));
    this.rowH = Math.max(6, Math.min(22, (this.height - this.RULER_H) / (hi - lo + 1)));
    this.top = hi;
    this.playhead = 0;
    // short files fill the width; longer ones open on their first 30 s (zoom out to see all)
    this.pps = this.duration <= 60 ? this.minPps() : (this.width - this.KEY_W) / 30;
    this.t0 = 0;
    this.draw();
  },

  clamp() {
    this.pps = Math.min(2000, Math.max(this.minPps(), this.pps));
    this.t0 = Math.max(0, Math.min(this.t0, this.duration - this.visibleSeconds));
    this.t0 = Math.max(0, this.t0);
    const maxTop = 127;
    const minTop = Math.min(maxTop, Math.ceil(this.rows) - 1);
    this.top = Math.max(minTop, Math.min(maxTop, this.top));
  },

  zoom(factor, atX = null) {
    const x = atX === null ? this.KEY_W + (this.width - this.KEY_W) / 2 : atX;
    const tAt = this.t0 + (x - this.KEY_W) / this.pps;
    this.pps *= factor;
    this.clamp();
    this.t0 = tAt - (x - this.KEY_W) / this.pps;
    this.clamp();
    this.draw();
  },

  fit() { this.pps = this.minPps(); this.t0 = 0; this.clamp(); this.draw(); },
  scrollTime(dt) { this.t0 += dt; this.clamp(); this.draw(); },
  scrollPitch(rows) { this.top += rows; this.clamp(); this.draw(); },

  /* during playback: the playhead moves, the view pages to keep it in sight */
  follow(t) {
    this.playhead = t;
    const vis = this.visibleSeconds;
    if (t > this.t0 + vis * 0.92 || t < this.t0) { this.t0 = Math.max(0, t - vis * 0.08); this.clamp(); }
    $('clock').textContent = fmtTime(t);
    this.draw();
  },

  timeAt(x) { return this.t0 + (x - this.KEY_W) / this.pps; },
  pitchAt(y) { return Math.floor(this.top - (y - this.RULER_H) / this.rowH + 1); },

  /* the note under (x, y), the topmost drawn track first */
  noteAt(x, y) {
    if (x < this.KEY_W || y < this.RULER_H) return null;
    const t = this.timeAt(x);
    const p = this.pitchAt(y);
    const slack = 2 / this.pps;
    for (let i = state.tracks.length - 1; i >= 0; i -= 1) {
      const tr = state.tracks[i];
      for (let j = firstStartingAfter(tr.notes, t - tr.maxDur - slack); j < tr.notes.length && tr.notes[j].start <= t + slack; j += 1) {
        const n = tr.notes[j];
        if (n.pitch === p && n.start - slack <= t && t <= n.end + slack) return { track: i, note: n };
      }
    }
    return null;
  },

  draw() {
    if (this.queued) return;
    this.queued = true;
    requestAnimationFrame(() => { this.queued = false; this.paint(); });
  },

  paint() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const W = this.width;
    const H = this.height;
    if (!W || !H || !state.result) return;
    if (c.width !== Math.round(W * dpr) || c.height !== Math.round(H * dpr)) {
      c.width = Math.round(W * dpr);
      c.height = Math.round(H * dpr);
    }
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    const { KEY_W, RULER_H, rowH, pps, t0, top } = this;
    const t1 = t0 + (W - KEY_W) / pps;
    const yOf = (p) => RULER_H + (top - p) * rowH;
    const xOf = (t) => KEY_W + (t - t0) * pps;
    g.fillStyle = '#1b1d24';
    g.fillRect(0, 0, W, H);
    const bottom = Math.floor(top - (H - RULER_H) / rowH);
    for (let p = top; p >= bottom; p -= 1) {                 // black-key rows, octave lines
      const y = yOf(p);
      if (BLACK.has(p % 12)) { g.fillStyle = '#22252e'; g.fillRect(KEY_W, y, W - KEY_W, rowH); }
      if (p % 12 === 0) { g.fillStyle = '#3a3e4a'; g.fillRect(KEY_W, y + rowH - 1, W - KEY_W, 1); }
    }
    const step = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1200].find((s) => s * pps >= 70) || 1200;
    g.fillStyle = '#343946';
    for (let s = Math.ceil(t0 / step) * step; s <= t1; s += step) g.fillRect(Math.round(xOf(s)), RULER_H, 1, H - RULER_H);
    // notes: only those in the visible time range (binary search on start)
    state.tracks.forEach((tr, i) => {
      g.fillStyle = tr.colour;
      g.globalAlpha = audible(i) ? 0.92 : 0.22;
      const notes = tr.notes;
      for (let j = firstStartingAfter(notes, t0 - tr.maxDur); j < notes.length && notes[j].start <= t1; j += 1) {
        const n = notes[j];
        if (n.end < t0 || n.pitch > top + 1 || n.pitch < bottom - 1) continue;
        g.fillRect(xOf(n.start), yOf(n.pitch) + 1, Math.max(2, (n.end - n.start) * pps), Math.max(2, rowH - 2));
      }
    });
    g.globalAlpha = 1;
    if (state.selected) {
      const n = state.selected.note;
      g.strokeStyle = '#fff';
      g.lineWidth = 2;
      g.strokeRect(xOf(n.start) - 1, yOf(n.pitch), Math.max(2, (n.end - n.start) * pps) + 2, rowH);
    }
    // playhead
    if (this.playhead >= t0 && this.playhead <= t1) {
      g.fillStyle = '#ffffff';
      g.fillRect(Math.round(xOf(this.playhead)), RULER_H, 2, H - RULER_H);
    }
    // time ruler
    g.fillStyle = '#2b2f3a';
    g.fillRect(KEY_W, 0, W - KEY_W, RULER_H);
    g.fillStyle = '#cfd3dc';
    g.font = '11px system-ui, sans-serif';
    g.textBaseline = 'middle';
    for (let s = Math.ceil(t0 / step) * step; s <= t1; s += step) {
      const x = Math.round(xOf(s));
      g.fillRect(x, RULER_H - 6, 1, 6);
      const label = step < 1 ? fmtTime(s) : `${Math.floor(s / 60)}:${String(Math.round(s % 60)).padStart(2, '0')}`;
      g.fillText(label, x + 3, RULER_H / 2 - 1);
    }
    if (this.playhead >= t0 && this.playhead <= t1) {
      g.fillStyle = '#fff';
      g.beginPath();
      const x = xOf(this.playhead) + 1;
      g.moveTo(x - 5, 0); g.lineTo(x + 5, 0); g.lineTo(x, 8); g.closePath(); g.fill();
    }
    // keyboard with note names
    for (let p = top; p >= bottom; p -= 1) {
      const y = yOf(p);
      const black = BLACK.has(p % 12);
      g.fillStyle = black ? '#333' : '#f4f4f4';
      g.fillRect(0, y, KEY_W - 1, rowH - (black ? 0 : 1));
      if (p % 12 === 0 || rowH >= 13) {
        g.fillStyle = black ? '#ddd' : '#333';
        g.font = `${Math.min(11, Math.max(8, rowH - 2))}px system-ui, sans-serif`;
        g.fillText(pitchName(p), 3, y + rowH / 2);
      }
    }
    g.fillStyle = '#1b1d24';
    g.fillRect(0, 0, KEY_W, RULER_H);
  },
};

function firstStartingAfter(notes, t) {
  let lo = 0;
  let hi = notes.length;
  while (lo < hi) { const m = (lo + hi) >> 1; if (notes[m].start < t) lo = m + 1; else hi = m; }
  return lo;
}

function describe(hit) {
  const n = hit.note;
  return `${pitchName(n.pitch)} (MIDI ${n.pitch}) · ${fmtTime(n.start)}–${fmtTime(n.end)} · ${state.tracks[hit.track].name} · velocity ${n.velocity}`;
}

function setUpRoll() {
  const c = roll.canvas;
  let drag = null;
  const local = (e) => { const r = c.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; };
  c.addEventListener('wheel', (e) => {
    if (!state.result) return;
    e.preventDefault();
    const [x] = local(e);
    if (e.ctrlKey || e.metaKey) roll.zoom(Math.exp(-e.deltaY * 0.002), x);
    else if (e.shiftKey) roll.scrollPitch(Math.sign(e.deltaY || e.deltaX) * -3);
    else roll.scrollTime((Math.abs(e.deltaX) > Math.abs(e.deltaY) ? e.deltaX : e.deltaY) / roll.pps);
  }, { passive: false });
  c.addEventListener('pointerdown', (e) => {
    if (!state.result) return;
    const [x, y] = local(e);
    drag = { x, y, t0: roll.t0, top: roll.top, moved: false };
    c.setPointerCapture(e.pointerId);
  });
  c.addEventListener('pointermove', (e) => {
    if (!state.result) return;
    const [x, y] = local(e);
    if (drag) {
      if (Math.abs(x - drag.x) + Math.abs(y - drag.y) > 3) { drag.moved = true; c.classList.add('dragging'); }
      if (drag.moved) {
        roll.t0 = drag.t0 - (x - drag.x) / roll.pps;
        roll.top = drag.top + Math.round((y - drag.y) / roll.rowH);
        roll.clamp();
        roll.draw();
      }
      return;
    }
    const hit = roll.noteAt(x, y);
    const tip = $('tip');
    tip.hidden = !hit;
    if (hit) {
      tip.textContent = describe(hit);
      tip.style.left = `${Math.min(x + 12, c.clientWidth - tip.offsetWidth - 4)}px`;
      tip.style.top = `${Math.max(0, y - 30)}px`;
    }
  });
  c.addEventListener('pointerleave', () => { $('tip').hidden = true; });
  c.addEventListener('pointerup', (e) => {
    if (!drag) return;
    const [x, y] = local(e);
    const moved = drag.moved;
    drag = null;
    c.classList.remove('dragging');
    if (moved) return;
    if (y < roll.RULER_H && x >= roll.KEY_W) { seekTo(roll.timeAt(x)); return; }
    const hit = roll.noteAt(x, y);
    state.selected = hit;
    $('note-info').textContent = hit ? `Selected: ${describe(hit)}` : 'No note there.';
    roll.draw();
  });
  c.addEventListener('keydown', (e) => {
    if (!state.result) return;
    const page = roll.visibleSeconds;
    const keys = {
      ArrowLeft: () => roll.scrollTime(-(e.shiftKey ? page * 0.9 : page * 0.1)),
      ArrowRight: () => roll.scrollTime(e.shiftKey ? page * 0.9 : page * 0.1),
      ArrowUp: () => roll.scrollPitch(e.shiftKey ? 12 : 2),
      ArrowDown: () => roll.scrollPitch(e.shiftKey ? -12 : -2),
      '+': () => roll.zoom(1.5), '=': () => roll.zoom(1.5), '-': () => roll.zoom(1 / 1.5), 0: () => roll.fit(),
      Home: () => { roll.t0 = 0; roll.clamp(); roll.draw(); },
      End: () => { roll.t0 = roll.duration; roll.clamp(); roll.draw(); },
    };
    if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
  });
  new ResizeObserver(() => { if (state.result) { roll.clamp(); roll.draw(); } }).observe(c);
}

function seekTo(t) {
  const time = Math.max(0, Math.min(roll.duration, t));
  roll.playhead = time;
  $('clock').textContent = fmtTime(time);
  if (state.playing && state.player) state.player.seek(time);
  roll.draw();
}

/* ------------------------------------------------------------------ wiring */

$('file').addEventListener('change', (e) => { if (e.target.files[0]) loadFile(e.target.files[0]); e.target.value = ''; });
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  if (e.dataTransfer.files[0] && !$('file').disabled) loadFile(e.dataTransfer.files[0]);
});
$('run').addEventListener('click', run);
$('cancel').addEventListener('click', cancel);
$('model').addEventListener('change', () => {
  updateInstrumentsSelect();
  if (!$('model').disabled && $('model').value === 'septimbre' && $('instruments').value === '1') $('instruments').value = 'auto';
  if (state.result && state.resultModel !== $('model').value) {
    setPhase('done', `Press Transcribe to run ${$('model').value === 'basicamt' ? 'BasicAMT' : 'Septimbre'} on this file.`, { progress: 1 });
  }
});
$('instruments').addEventListener('change', () => { if (state.result && state.regroupable) regroup(); });
$('play').addEventListener('click', togglePlay);
$('zoom-in').addEventListener('click', () => roll.zoom(1.5));
$('zoom-out').addEventListener('click', () => roll.zoom(1 / 1.5));
$('zoom-fit').addEventListener('click', () => roll.fit());
$('level').addEventListener('input', () => { if (state.player) state.player.setLevel(Number($('level').value)); });
for (const kind of ['midi', 'json', 'csv']) $(`download-${kind}`).addEventListener('click', () => download(kind));
document.addEventListener('keydown', (e) => {
  // Space plays/pauses anywhere except where it types or presses a control
  if (e.key !== ' ' || !state.result) return;
  const tag = e.target.tagName;
  if (['INPUT', 'SELECT', 'TEXTAREA', 'BUTTON'].includes(tag)) return;
  e.preventDefault();
  togglePlay();
});
setUpRoll();
window.timbreamtPage = state;   // for tests and curious users
window.timbreamtRoll = roll;
start();
