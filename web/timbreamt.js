/* timbreamt ES module API.
 *
 *   import { createTranscriber, decodeAudio } from './timbreamt.js';
 *   const t = await createTranscriber({ baseUrl: new URL('.', import.meta.url).href, onProgress });
 *   const result = await t.transcribe(float32Samples, sampleRate, { model: 'septimbre', instruments: 'auto' });
 *   // result: the CLI's JSON object {version, model, sample_rate, duration, tracks:[{name, notes:[...]}]}
 *   const again = await t.regroup(3);        // the same notes in 3 instruments, without the model
 *   t.dispose();
 *
 * All work happens in one Web Worker (onnxruntime-web + Pyodide load once and are reused; jobs run one
 * at a time); the model runs in inference workers started by it, one per thread, each computing its own
 * window, so the Python work of one window overlaps the inference of the next ones (`inferenceWorkers`:
 * how many; 0 keeps the model in the first worker). Samples at any rate are resampled in the worker by the CLI's own resampler
 * (timbreamt.core.resample), so the notes are the CLI's. Errors are Error objects with one readable line.
 */
import './wav.js';   // defines self.timbreamtWav (shared with the worker)

const wav = self.timbreamtWav;
export const parseWav = wav.parseWav;

let constantsPromise = null;
/* The system's numbers (constants.json, written by the bundle from timbreamt.core.constants). */
export function loadConstants(baseUrl) {
  constantsPromise = constantsPromise || fetch(new URL('constants.json', baseUrl || import.meta.url))
    .then((r) => { if (!r.ok) throw new Error(`constants.json missing (HTTP ${r.status}): rebuild the bundle`); return r.json(); });
  return constantsPromise;
}

/* Average of the channels of an AudioBuffer (the CLI averages too). */
export function mixdown(audioBuffer) {
  const n = audioBuffer.length;
  const out = new Float32Array(n);
  for (let c = 0; c < audioBuffer.numberOfChannels; c += 1) {
    const ch = audioBuffer.getChannelData(c);
    for (let i = 0; i < n; i += 1) out[i] += ch[i];
  }
  if (audioBuffer.numberOfChannels > 1) for (let i = 0; i < n; i += 1) out[i] /= audioBuffer.numberOfChannels;
  return out;
}

/* The sample rate written in a compressed file's header (FLAC, Ogg Vorbis/Opus, MP3), or null: the
 * browser then decodes at that rate (no resampling of its own) and the worker resamples like the CLI. */
export function sniffSampleRate(arrayBuffer) {
  const b = new Uint8Array(arrayBuffer, 0, Math.min(arrayBuffer.byteLength, 1 << 16));
  const text = (o, s) => s.split('').every((ch, i) => b[o + i] === ch.charCodeAt(0));
  if (text(0, 'fLaC') && b.length > 20) return (b[18] << 12) | (b[19] << 4) | (b[20] >> 4);   // STREAMINFO
  if (text(0, 'OggS')) {
    for (let i = 0; i + 16 < b.length; i += 1) {
      if (b[i] === 1 && text(i + 1, 'vorbis')) return b[i + 12] | (b[i + 13] << 8) | (b[i + 14] << 16) | (b[i + 15] << 24);
      if (text(i, 'OpusHead')) {
        // libsndfile decodes Opus at the input rate its header records when Opus supports it, else 48 kHz
        const input = b[i + 12] | (b[i + 13] << 8) | (b[i + 14] << 16) | (b[i + 15] << 24);
        return [8000, 12000, 16000, 24000].includes(input) ? input : 48000;
      }
    }
    return null;
  }
  let p = 0;
  if (text(0, 'ID3') && b.length > 10) p = 10 + ((b[6] << 21) | (b[7] << 14) | (b[8] << 7) | b[9]);
  if (p >= b.length) return null;
  for (let i = p; i + 3 < b.length && i < p + 8192; i += 1) {       // first MPEG audio frame header
    if (b[i] === 0xff && (b[i + 1] & 0xe0) === 0xe0) {
      const version = (b[i + 1] >> 3) & 3;                           // 3: MPEG1, 2: MPEG2, 0: MPEG2.5
      const index = (b[i + 2] >> 2) & 3;
      if (version === 1 || index === 3) continue;
      const base = [44100, 48000, 32000][index];                    // MPEG-1 rates (the format's table)
      return version === 3 ? base : version === 2 ? base / 2 : base / 4;
    }
  }
  return null;
}

/* Any audio file's bytes -> {samples: Float32Array mono, sampleRate, channels}, at the file's own
 * rate. WAV exactly as the CLI reads it; other formats (mp3, ogg, flac, ...) through the browser's
 * decoder at the rate their header gives. */
export async function decodeAudio(arrayBuffer) {
  const w = wav.parseWav(arrayBuffer);
  if (w) return w;
  const rate = sniffSampleRate(arrayBuffer);
  const bits = flacBits(arrayBuffer);        // read before decodeAudioData detaches the bytes
  // unknown rate: let the browser decode at the graphs' rate (its resampler, not the CLI's)
  const fallback = (await loadConstants()).GRAPH_SAMPLE_RATE;
  const ctx = new OfflineAudioContext(1, 1, rate && rate >= 3000 && rate <= 768000 ? rate : fallback);
  let buffer;
  try {
    buffer = await ctx.decodeAudioData(arrayBuffer);
  } catch (e) {
    throw new Error('not a supported audio file (the browser cannot decode it)');
  }
  if (bits === 16) {
    // Chromium turns 16-bit samples into floats as x/32768 below zero but x/32767 above; libsndfile
    // (the CLI) divides by 32768 throughout. Undo it (exact: x is recovered by rounding), so a 16-bit
    // FLAC gives the page the CLI's very samples.
    for (let c = 0; c < buffer.numberOfChannels; c += 1) {
      const ch = buffer.getChannelData(c);
      for (let i = 0; i < ch.length; i += 1) if (ch[i] > 0) ch[i] = Math.round(ch[i] * 32767) / 32768;
    }
  }
  return { samples: mixdown(buffer), sampleRate: buffer.sampleRate, channels: buffer.numberOfChannels };
}

/* Bits per sample of a FLAC file (STREAMINFO), or null for other files. */
function flacBits(arrayBuffer) {
  const b = new Uint8Array(arrayBuffer, 0, Math.min(arrayBuffer.byteLength, 32));
  if (b.length < 22 || String.fromCharCode(b[0], b[1], b[2], b[3]) !== 'fLaC') return null;
  return (((b[20] & 1) << 4) | (b[21] >> 4)) + 1;
}

/* A WAV File/Blob's header: {sampleRate, channels, frames, duration}, or null if not a known WAV. */
export async function wavInfo(blob) {
  const layout = await wav.blobLayout(blob);
  if (!layout) return null;
  return { sampleRate: layout.rate, channels: layout.channels, frames: layout.frames, duration: layout.frames / layout.rate };
}

/* Check the options before they reach the worker: a clear Error naming the bad one. */
function checkOptions(opts, maxInstruments) {
  const { model = 'septimbre', instruments = 'auto' } = opts;
  if (typeof model !== 'string' || !model) throw new Error(`model must be 'basicamt', 'septimbre' or a URL of an .onnx graph, got ${JSON.stringify(model)}`);
  const okNumber = Number.isInteger(instruments) && instruments >= 1 && instruments <= maxInstruments;
  if (!(instruments === 'auto' || instruments === null || okNumber)) {
    throw new Error(`instruments must be a whole number from 1 to ${maxInstruments} or 'auto', got ${JSON.stringify(instruments)}`);
  }
  if (model === 'basicamt' && Number.isInteger(instruments) && instruments > 1) {
    throw new Error(`basicamt has no timbre embedding: it cannot separate ${instruments} instruments (use the septimbre model)`);
  }
}

export async function createTranscriber({ baseUrl, onProgress, threads, workerUrl, inferenceWorkers } = {}) {
  const base = new URL(baseUrl || '.', import.meta.url).href;
  const K = await loadConstants(base);
  let worker = null;
  let info = null;
  let failed = null;
  let ready = null;
  const pending = new Map();
  let nextId = 1;

  function rejectAll(error) {
    for (const job of pending.values()) job.reject(error);
    pending.clear();
  }

  function start() {
    failed = null;
    worker = new Worker(workerUrl || new URL('worker.js', base).href);
    ready = new Promise((resolve, reject) => {
      worker.onmessage = (event) => {
        const msg = event.data;
        if (msg.type === 'ready') { info = msg; resolve(msg); return; }
        if (msg.type === 'progress') { if (onProgress) onProgress(msg); return; }
        const job = pending.get(msg.id);
        if (msg.type === 'error' && !job) { failed = new Error(msg.message); reject(failed); return; }
        if (!job) return;
        pending.delete(msg.id);
        if (msg.type === 'error') job.reject(new Error(msg.message));
        else job.resolve(msg);
      };
      worker.onerror = (event) => {
        event.preventDefault();
        failed = new Error(`the timbreamt engine stopped: ${event.message || 'unknown error'}`);
        reject(failed);
        rejectAll(failed);
      };
    });
    worker.postMessage({ type: 'init', baseUrl: base, threads, inferenceWorkers });
    return ready;
  }

  async function call(message, transfer = []) {
    await ready;
    if (failed) throw failed;
    const id = nextId++;
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject });
      worker.postMessage({ ...message, id }, transfer);
    });
  }

  function run(samples, sampleRate, opts = {}) {
    if (!(samples instanceof Float32Array)) throw new TypeError('samples must be a Float32Array (mono)');
    if (!Number.isInteger(sampleRate) || sampleRate < 1000 || sampleRate > 768000) {
      throw new TypeError(`sampleRate must be a whole number of Hz between 1000 and 768000, got ${sampleRate}`);
    }
    checkOptions(opts, K.MAX_INSTRUMENTS);
    const copy = samples.slice();   // never detach the caller's array
    return call(jobMessage(opts, { samples: copy, sampleRate }), [copy.buffer]);
  }

  function jobMessage(opts, audio) {
    return { type: 'transcribe', ...audio, model: opts.model || 'septimbre',
             instruments: opts.instruments === undefined ? 'auto' : opts.instruments,
             options: opts.options, returnMaps: !!opts.returnMaps, keepEmbeddings: !!opts.keepEmbeddings };
  }

  await start();

  return {
    get info() { return info; },
    constants: K,
    /* -> the CLI's JSON object */
    async transcribe(samples, sampleRate, opts) { return (await run(samples, sampleRate, opts)).transcription; },
    /* -> {transcription, warnings, autoInstruments, regroupable, midi (ArrayBuffer), timings, windowed, maps?} */
    async transcribeDetailed(samples, sampleRate, opts) { return run(samples, sampleRate, opts); },
    /* A File/Blob: a WAV is streamed to the worker piece by piece (an hour never sits in memory);
     * other formats are decoded here first. Same reply as transcribeDetailed. */
    async transcribeFile(file, opts = {}) {
      checkOptions(opts, K.MAX_INSTRUMENTS);
      if (await wav.blobLayout(file)) return call(jobMessage(opts, { file }));
      const audio = await decodeAudio(await file.arrayBuffer());
      return call(jobMessage(opts, { samples: audio.samples, sampleRate: audio.sampleRate }), [audio.samples.buffer]);
    },
    /* Load a model ahead of the first transcription (jobs wait for it; its progress is stage 'model'). */
    async preload(model = 'septimbre') { return call({ type: 'load', model }); },
    /* The last transcription's notes in another number of instruments (or 'auto'), without the model. */
    async regroup(instruments) {
      checkOptions({ instruments }, K.MAX_INSTRUMENTS);
      return call({ type: 'regroup', instruments });
    },
    /* {midi: ArrayBuffer, csv: string} of a transcription object (renamed tracks kept), with a GM
     * program per track for the MIDI file. */
    async exportFiles(transcription, programs) { return call({ type: 'export', transcription, programs }); },
    /* Stop whatever runs now: the worker is ended and a new one started (the engine loads again);
     * pending calls reject with 'cancelled'. Resolves when the new engine is ready. */
    async cancel() {
      worker.terminate();
      rejectAll(new Error('cancelled'));
      return start();
    },
    dispose() {
      worker.terminate();
      rejectAll(new Error('transcriber disposed'));
      failed = new Error('transcriber disposed');
    },
  };
}
