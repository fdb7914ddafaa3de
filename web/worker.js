/* timbreamt worker (classic Web Worker, so noteDigger-style hosts can use it too).
 *
 * Loads onnxruntime-web and Pyodide (+ numpy + our wheel) once, then for each job: runs the ONNX
 * graph window by window (the plan and the stitching come from timbreamt.core in Pyodide, the same
 * code as the CLI), decodes notes and clusters them in Pyodide, and replies with the CLI's JSON.
 *
 * Messages in:  {type:'init', baseUrl, threads?}
 *               {type:'transcribe', id, samples: Float32Array (mono, 44.1 kHz), sampleRate (original),
 *                model: 'basicamt'|'septimbre'|URL, instruments: 'auto'|N, options?, returnMaps?}
 * Messages out: {type:'ready', threads, crossOriginIsolated}
 *               {type:'progress', id, stage, done, total}
 *               {type:'result', id, transcription, warnings, midi: ArrayBuffer, maps?, timings,
 *                windowed (true: the convolutions ran on each window's core only)}
 *               {type:'error', id, message}
 */
'use strict';

// The system's numbers, read from timbreamt.core.constants in Pyodide at init (defined once, in Python)
let K = null;
let baseUrl = '';
let pyodide = null;
let readyPromise = null;
const sessions = new Map();

function post(msg, transfer) { self.postMessage(msg, transfer || []); }

async function init(base, threads) {
  baseUrl = base.endsWith('/') ? base : base + '/';
  if (typeof WebAssembly !== 'object') throw new Error('this browser has no WebAssembly: timbreamt cannot run here');
  importScripts(baseUrl + 'ort/ort.wasm.min.js');
  ort.env.wasm.wasmPaths = baseUrl + 'ort/';
  // Threads need cross-origin isolation (COOP/COEP); without it onnxruntime-web runs on one thread.
  const wanted = threads || Math.min(2, self.navigator.hardwareConcurrency || 1);
  ort.env.wasm.numThreads = self.crossOriginIsolated ? wanted : 1;
  importScripts(baseUrl + 'pyodide/pyodide.js');
  pyodide = await loadPyodide({ indexURL: baseUrl + 'pyodide/' });
  await pyodide.loadPackage('numpy');
  const wheels = await (await fetch(baseUrl + 'wheels/index.json')).json();
  await pyodide.loadPackage(baseUrl + 'wheels/' + wheels.timbreamt);
  pyodide.runPython('import timbreamt.core.browser_job');
  const consts = pyodide.runPython('timbreamt.core.browser_job.browser_constants()');
  K = consts.toJs({ dict_converter: Object.fromEntries });
  consts.destroy();
  return { threads: ort.env.wasm.numThreads, crossOriginIsolated: !!self.crossOriginIsolated };
}

/* A named model ('basicamt') loads models/<name>.windowed.onnx when the bundle has it: the same graph
 * with its `crop` input required (onnxruntime-web cannot feed an optional one), so each window's
 * convolutions skip the context; else models/<name>.onnx. A URL loads as given. */
const modelUrls = new Map();   // model name or URL -> the URL loaded for it

async function getSession(model) {
  let url = modelUrls.get(model);
  let resp = null;
  if (!url) {
    if (/\.onnx$/.test(model)) {
      url = new URL(model, baseUrl).href;
    } else {
      url = baseUrl + 'models/' + model + '.windowed.onnx';
      resp = await fetch(url);
      if (!resp.ok) { url = baseUrl + 'models/' + model + '.onnx'; resp = null; }
    }
    modelUrls.set(model, url);
  }
  if (!sessions.has(url)) {
    resp = resp || await fetch(url);
    if (!resp.ok) throw new Error(`model not found: ${url} (HTTP ${resp.status})`);
    const bytes = new Uint8Array(await resp.arrayBuffer());
    let session;
    try {
      // logSeverityLevel 3: our graphs' optional `crop` input (an initializer the browser never
      // overrides) would otherwise print a warning on every load
      session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'], graphOptimizationLevel: 'all',
                                                           logSeverityLevel: 3 });
    } catch (e) {
      throw new Error(`cannot load model ${url}: ${e.message || e}`);
    }
    if (session.inputNames[0] !== 'audio' || session.outputNames[0] !== 'onset' || session.outputNames[1] !== 'frame') {
      throw new Error(`${url} does not follow the timbreamt ONNX contract`);
    }
    const meta = await readMetadata(bytes);
    sessions.set(url, { session, meta, canCrop: session.inputNames.includes('crop'),
                        name: meta.model || url.split('/').pop().replace(/(\.windowed)?\.onnx$/, '') });
  }
  return sessions.get(url);
}

/* The graph's metadata_props (decoding defaults) read with Python's protobuf-free parser. */
async function readMetadata(bytes) {
  const fn = pyodide.runPython('from timbreamt.core.graph_metadata import read_metadata; read_metadata');
  const meta = fn(bytes).toJs({ dict_converter: Object.fromEntries });
  fn.destroy();
  return meta;
}

/* Run one job; returns the 'result' reply. onProgress(stage, done, total) is optional. */
async function runJob(msg, onProgress) {
  const t0 = performance.now();
  const progress = onProgress || (() => {});
  const { samples } = msg;
  if (!(samples instanceof Float32Array)) throw new Error('samples must be a Float32Array');
  if (samples.length === 0) throw new Error('audio is empty (0 samples)');
  for (let i = 0; i < samples.length; i += 1) {
    if (!Number.isFinite(samples[i])) throw new Error(`audio contains NaN or infinite samples at ${(i / K.GRAPH_SAMPLE_RATE).toFixed(2)} s`);
  }
  const { session, meta, name, canCrop } = await getSession(msg.model || 'septimbre');
  const hasEmbedding = session.outputNames.includes('embedding');
  const opts = msg.options || {};
  // decoding defaults (the graph's metadata) and the instruments check: timbreamt.core.contract, as in the CLI
  const Job = pyodide.runPython('timbreamt.core.browser_job.BrowserJob');
  const instruments = msg.instruments === undefined ? 'auto' : msg.instruments;
  const metaProxy = pyodide.toPy(meta);
  let job;
  try {
    job = Job.callKwargs(samples.length, name, hasEmbedding, instruments, msg.sampleRate || K.GRAPH_SAMPLE_RATE, {
      metadata: metaProxy, onset_threshold: opts.onsetThreshold ?? null, frame_threshold: opts.frameThreshold ?? null,
      min_note_frames: opts.minNoteFrames ?? null, melodia: opts.melodia ?? null, can_crop: canCrop,
      ...(opts.coreFrames ? { core_frames: opts.coreFrames } : {}),
    });
  } finally {
    metaProxy.destroy();
  }
  Job.destroy();
  const windows = job.window_list().toJs();
  const maps = msg.returnMaps ? { onset: [], frame: [], embedding: [] } : null;
  const timings = { inference: 0, postprocess: 0 };
  try {
    for (let i = 0; i < windows.length; i += 1) {
      const [inStart, inEnd, coreStart, coreEnd, cropStart, cropEnd] = windows[i];
      progress('inference', i, windows.length);
      const tIn = performance.now();
      const input = new ort.Tensor('float32', samples.subarray(inStart, inEnd), [1, 1, inEnd - inStart]);
      const feeds = { audio: input };
      if (canCrop) feeds[K.CROP_INPUT] = new ort.Tensor('int64', BigInt64Array.from([BigInt(cropStart), BigInt(cropEnd)]), [2]);
      const out = await session.run(feeds);
      timings.inference += performance.now() - tIn;
      const frames = out.onset.dims[2];
      const tPost = performance.now();
      job.add(i, frames, out.onset.data, out.frame.data, hasEmbedding ? out.embedding.data : null);
      timings.postprocess += performance.now() - tPost;
      if (maps) {
        const first = Math.floor(inStart / K.GRAPH_HOP) + cropStart;   // the maps' first frame
        const lo = coreStart - first;
        const hi = coreEnd - first;
        maps.onset.push(sliceMap(out.onset.data, frames, lo, hi, K.N_PITCHES));
        maps.frame.push(sliceMap(out.frame.data, frames, lo, hi, K.N_PITCHES));
        if (hasEmbedding) maps.embedding.push(sliceMap(out.embedding.data, frames, lo, hi, K.EMBEDDING_DIM * K.N_PITCHES));
      }
      for (const t of Object.values(out)) if (t.dispose) t.dispose();
    }
    progress(job.instruments != null ? 'notes+clustering' : 'notes', windows.length, windows.length);
    const tPost = performance.now();
    const result = JSON.parse(job.finish());
    const midiProxy = job.midi();
    const midi = midiProxy.toJs().slice().buffer;
    midiProxy.destroy();
    timings.postprocess += performance.now() - tPost;
    timings.total = performance.now() - t0;
    const warnings = result.warnings || [];
    delete result.warnings;
    const reply = { type: 'result', id: msg.id, transcription: result, warnings, midi, timings, windowed: canCrop };
    if (maps) {
      reply.maps = { onset: concatMaps(maps.onset, K.N_PITCHES), frame: concatMaps(maps.frame, K.N_PITCHES) };
      if (hasEmbedding) reply.maps.embedding = concatMaps(maps.embedding, K.EMBEDDING_DIM * K.N_PITCHES);
    }
    return reply;
  } finally {
    job.destroy();
  }
}

async function transcribe(msg) {
  const reply = await runJob(msg, (stage, done, total) => post({ type: 'progress', id: msg.id, stage, done, total }));
  post(reply, [reply.midi]);
}

/* rows x frames (row-major) -> rows x (hi - lo) */
function sliceMap(data, frames, lo, hi, rows) {
  const out = new Float32Array(rows * (hi - lo));
  for (let r = 0; r < rows; r += 1) out.set(data.subarray(r * frames + lo, r * frames + hi), r * (hi - lo));
  return { rows, frames: hi - lo, data: out };
}

function concatMaps(parts, rows) {
  const total = parts.reduce((n, p) => n + p.frames, 0);
  const out = new Float32Array(rows * total);
  let at = 0;
  for (const p of parts) {
    for (let r = 0; r < rows; r += 1) out.set(p.data.subarray(r * p.frames, (r + 1) * p.frames), r * total + at);
    at += p.frames;
  }
  return { rows, frames: total, data: Array.from(out) };
}

self.onmessage = async (event) => {
  const msg = event.data || {};
  try {
    if (msg.type === 'init') {
      readyPromise = readyPromise || init(msg.baseUrl, msg.threads);
      post({ type: 'ready', ...(await readyPromise) });
    } else if (msg.type === 'transcribe') {
      if (!readyPromise) throw new Error('worker not initialised: send {type:"init"} first');
      await readyPromise;
      await transcribe(msg);
    }
  } catch (e) {
    const text = String((e && e.message) || e);
    const message = /memory|Out of bounds|allocat|bad_alloc|too large/i.test(text)
      ? `out of memory: ${text} (try a shorter file or close other tabs)` : text;
    post({ type: 'error', id: msg.id, message });
  }
};
