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
    /* -> {transcription, warnings, midi (ArrayBuffer), timings, maps?} */
    async transcribeDetailed(samples, sampleRate, opts) { return run(samples, sampleRate, opts); },
    dispose() {
      worker.terminate();
      for (const job of pending.values()) job.reject(new Error('transcriber disposed'));
      pending.clear();
      failed = new Error('transcriber disposed');
    },
  };
}
