/* timbreamt ES module API.
 *
 *   import { createTranscriber } from './timbreamt.js';
 *   const t = await createTranscriber({ baseUrl: new URL('.', import.meta.url).href, onProgress });
 *   const result = await t.transcribe(float32Samples, sampleRate, { model: 'septimbre', instruments: 'auto' });
 *   // result: the CLI's JSON object {version, model, sample_rate, duration, tracks:[{name, notes:[...]}]}
 *   t.dispose();
 *
 * All work happens in one Web Worker (onnxruntime-web + Pyodide load once and are reused).
 */
export const INPUT_RATE = 44100;

/* Mono float32 at 44.1 kHz from samples at any rate (WebAudio's resampler). */
export async function resampleTo44100(samples, sampleRate) {
  if (sampleRate === INPUT_RATE) return samples;
  const frames = Math.max(1, Math.round(samples.length * INPUT_RATE / sampleRate));
  const ctx = new OfflineAudioContext(1, frames, INPUT_RATE);
  const buf = ctx.createBuffer(1, samples.length, sampleRate);
  buf.copyToChannel(samples, 0);
  const src = ctx.createBufferSource();
  src.buffer = buf;
  src.connect(ctx.destination);
  src.start();
  return (await ctx.startRendering()).getChannelData(0);
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

/* WAV decoded exactly as the CLI reads it (libsndfile: integer PCM / 2^(bits-1), floats as they are),
 * so the page and the CLI see bit-identical samples. Browsers' decodeAudioData scales 16-bit PCM by
 * 1/32767 for positive samples only (measured in Chromium: a 3e-5 asymmetric distortion that moved the
 * maps by 4e-4). Returns {samples: Float32Array mono (channel mean), sampleRate, channels} or null when
 * the bytes are not a WAV this parser knows (then decodeAudio falls back to the browser's decoder). */
export function parseWav(arrayBuffer) {
  const v = new DataView(arrayBuffer);
  const tag = (o) => String.fromCharCode(v.getUint8(o), v.getUint8(o + 1), v.getUint8(o + 2), v.getUint8(o + 3));
  if (v.byteLength < 12 || tag(0) !== 'RIFF' || tag(8) !== 'WAVE') return null;
  let fmt = null;
  let pos = 12;
  while (pos + 8 <= v.byteLength) {
    const id = tag(pos);
    const size = v.getUint32(pos + 4, true);
    const body = pos + 8;
    if (id === 'fmt ' && size >= 16) {
      let format = v.getUint16(body, true);
      if (format === 0xfffe && size >= 26) format = v.getUint16(body + 24, true);   // WAVE_FORMAT_EXTENSIBLE
      fmt = { format, channels: v.getUint16(body + 2, true), rate: v.getUint32(body + 4, true),
              bits: v.getUint16(body + 14, true) };
    } else if (id === 'data' && fmt) {
      const { format, channels, rate, bits } = fmt;
      const known = (format === 1 && [8, 16, 24, 32].includes(bits)) || (format === 3 && [32, 64].includes(bits));
      if (!known || channels < 1 || rate < 1) return null;
      const width = bits / 8;
      const frames = Math.floor(Math.min(size, v.byteLength - body) / (width * channels));
      const sample = format === 3
        ? (bits === 32 ? (o) => v.getFloat32(o, true) : (o) => Math.fround(v.getFloat64(o, true)))
        : bits === 8 ? (o) => (v.getUint8(o) - 128) / 128
        : bits === 16 ? (o) => v.getInt16(o, true) / 32768
        : bits === 24 ? (o) => ((v.getUint8(o + 2) << 24 | v.getUint8(o + 1) << 16 | v.getUint8(o) << 8) >> 8) / 8388608
        : (o) => v.getInt32(o, true) / 2147483648;
      const out = new Float32Array(frames);
      const stride = width * channels;
      for (let c = 0; c < channels; c += 1) {
        for (let i = 0, o = body + c * width; i < frames; i += 1, o += stride) out[i] += Math.fround(sample(o));
      }
      if (channels > 1) for (let i = 0; i < frames; i += 1) out[i] /= channels;
      return { samples: out, sampleRate: rate, channels };
    }
    pos = body + size + (size & 1);
  }
  return null;
}

/* Any audio file's bytes -> {samples: Float32Array mono, sampleRate, channels}. WAV exactly as the
 * CLI reads it; other formats (mp3, ogg, flac, ...) through the browser's decoder at 44.1 kHz. */
export async function decodeAudio(arrayBuffer) {
  const wav = parseWav(arrayBuffer);
  if (wav) return wav;
  const ctx = new AudioContext({ sampleRate: INPUT_RATE });
  try {
    const buffer = await ctx.decodeAudioData(arrayBuffer);
    return { samples: mixdown(buffer), sampleRate: buffer.sampleRate, channels: buffer.numberOfChannels };
  } finally {
    ctx.close();
  }
}

export async function createTranscriber({ baseUrl, onProgress, threads, workerUrl } = {}) {
  const base = new URL(baseUrl || '.', self.location.href).href;
  const worker = new Worker(workerUrl || new URL('worker.js', base).href);
  const pending = new Map();
  let nextId = 1;
  let failed = null;
  const ready = new Promise((resolve, reject) => {
    worker.onmessage = (event) => {
      const msg = event.data;
      if (msg.type === 'ready') { resolve(msg); return; }
      if (msg.type === 'progress') { if (onProgress) onProgress(msg); return; }
      const job = pending.get(msg.id);
      if (msg.type === 'error' && !job) { failed = new Error(msg.message); reject(failed); return; }
      if (!job) return;
      pending.delete(msg.id);
      if (msg.type === 'error') job.reject(new Error(msg.message));
      else job.resolve(msg);
    };
    worker.onerror = (event) => {
      failed = new Error(`timbreamt worker failed: ${event.message || 'unknown error'}`);
      reject(failed);
      for (const job of pending.values()) job.reject(failed);
      pending.clear();
    };
  });
  worker.postMessage({ type: 'init', baseUrl: base, threads });
  const info = await ready;

  async function run(samples, sampleRate, opts = {}) {
    if (failed) throw failed;
    if (!(samples instanceof Float32Array)) throw new TypeError('samples must be a Float32Array (mono)');
    if (!(sampleRate > 0)) throw new TypeError('sampleRate must be a positive number');
    const input = await resampleTo44100(samples, sampleRate);
    const copy = input === samples ? samples.slice() : input;   // never detach the caller's array
    const id = nextId++;
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject });
      worker.postMessage({
        type: 'transcribe', id, samples: copy, sampleRate, model: opts.model || 'septimbre',
        instruments: opts.instruments === undefined ? 'auto' : opts.instruments,
        options: opts.options, returnMaps: !!opts.returnMaps,
      }, [copy.buffer]);
    });
  }

  return {
    info,
    /* -> the CLI's JSON object */
    async transcribe(samples, sampleRate, opts) { return (await run(samples, sampleRate, opts)).transcription; },
    /* -> {transcription, warnings, midi (ArrayBuffer), timings, windowed, maps?} */
    async transcribeDetailed(samples, sampleRate, opts) { return run(samples, sampleRate, opts); },
    dispose() {
      worker.terminate();
      for (const job of pending.values()) job.reject(new Error('transcriber disposed'));
      pending.clear();
      failed = new Error('transcriber disposed');
    },
  };
}
