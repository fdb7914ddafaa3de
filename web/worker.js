/* timbreamt worker (classic Web Worker, so noteDigger-style hosts can use it too).
 *
 * Loads onnxruntime-web and Pyodide (+ numpy + our core wheel) once, then runs jobs one at a time:
 * reads the audio piece by piece (a WAV file straight from its Blob, or samples the page decoded),
 * resamples it to the graph's rate with timbreamt.core.resample (the CLI's resampler), runs the ONNX
 * graph window by window as the samples arrive (the plan and the stitching come from timbreamt.core in
 * Pyodide, the same code as the CLI), decodes notes and clusters them in Pyodide, and replies with the
 * CLI's JSON. The last Septimbre job stays in memory, so {type:'regroup'} splits its notes into another
 * number of instruments without running the model again.
 *
 * The model runs in inference workers (this script again, answering 'ort-*' messages) when they can be
 * started: one per thread, each running whole windows on one onnxruntime thread, so that two windows
 * are computed at once and the Python work of each window overlaps the inference of the next ones;
 * where nested workers are not allowed, it runs here.
 *
 * Messages in:  {type:'init', baseUrl, threads?, inferenceWorkers? (how many; default one per thread;
 *                 0: the model runs in this worker, with all the threads)}
 *               {type:'transcribe', id, model: 'basicamt'|'septimbre'|URL, instruments: 'auto'|N,
 *                 and either file: Blob (a WAV, streamed) or samples: Float32Array (mono) + sampleRate,
 *                 options?: {onsetThreshold, frameThreshold, minNoteFrames, melodia, coreFrames}, returnMaps?}
 *               {type:'load', id, model}               (load a model now, so the first transcription need not)
 *               {type:'regroup', id, instruments}      (the last job's notes, another number of instruments)
 *               {type:'export', id, transcription, programs?}   (MIDI bytes and CSV of a shown result)
 * Messages out: {type:'ready', threads, crossOriginIsolated, constants, inferenceWorkers}
 *               {type:'progress', id, stage: 'model'|'inference'|'notes'|'clustering', done, total}
 *               {type:'result', id, transcription, warnings, autoInstruments, regroupable, midi: ArrayBuffer,
 *                threads, inferenceWorkers (what ran the model: onnxruntime threads in all, workers),
 *                maps?, timings: {total, inference (the model's run time, summed over windows, some of
 *                them at the same time), waiting (the time this worker idled for it), reading, windowPost,
 *                finish, postprocess (windowPost + finish), in ms},
 *                windowed (true: the convolutions ran on each window's core only)}
 *               {type:'exported', id, midi: ArrayBuffer, csv}
 *               {type:'error', id, message}   (one line; Python tracebacks go to the console)
 */
'use strict';

// The system's numbers, read from timbreamt.core in Pyodide at init (defined once, in Python)
let K = null;
let baseUrl = '';
let pyodide = null;
let readyPromise = null;
let lastJob = null;            // {job (PyProxy BrowserJob), model, midi} of the last finished transcription
const sessions = new Map();
const READ_SECONDS = 10;       // seconds of audio read and resampled per piece

function post(msg, transfer) { self.postMessage(msg, transfer || []); }

/* The onnxruntime threads asked for, or by default as many as the machine has, at most 2. */
function threadsWanted(threads) {
  return threads || Math.min(2, self.navigator.hardwareConcurrency || 1);
}

/* Loads onnxruntime-web here, in this worker (the fallback, and the second worker's own engine). */
function loadOrt(threads) {
  if (typeof ort === 'undefined') importScripts(baseUrl + 'ort/ort.wasm.min.js');
  ort.env.wasm.wasmPaths = baseUrl + 'ort/';
  // Threads need cross-origin isolation (COOP/COEP); without it onnxruntime-web runs on one thread.
  ort.env.wasm.numThreads = self.crossOriginIsolated ? threadsWanted(threads) : 1;
  return ort.env.wasm.numThreads;
}

async function init(base, threads, options = {}) {
  // absolute: the second worker resolves it from its own location
  baseUrl = new URL(base.endsWith('/') ? base : base + '/', self.location.href).href;
  if (typeof WebAssembly !== 'object') throw new Error('this browser has no WebAssembly: timbreamt cannot run here');
  importScripts(baseUrl + 'wav.js');
  const total = threadsWanted(threads);
  const count = typeof Worker === 'undefined' ? 0 : options.inferenceWorkers ?? total;
  engine = { total, count, threadsEach: Math.max(1, Math.floor(total / Math.max(1, count))), started: null };
  importScripts(baseUrl + 'pyodide/pyodide.js');
  pyodide = await loadPyodide({ indexURL: baseUrl + 'pyodide/' });
  await pyodide.loadPackage('numpy', { messageCallback: () => {} });
  const wheels = await (await fetch(baseUrl + 'wheels/index.json')).json();
  await pyodide.loadPackage(baseUrl + 'wheels/' + wheels.timbreamt, { messageCallback: () => {} });
  pyodide.runPython('import timbreamt.core.browser_job');
  K = py('timbreamt.core.browser_job.browser_constants()');
  // the inference engine starts with the first model load (a stage the page shows), not here
  return { threads: count > 0 ? count * engine.threadsEach : (self.crossOriginIsolated ? total : 1),
           crossOriginIsolated: !!self.crossOriginIsolated, constants: K, inferenceWorkers: count };
}

/* Starts the inference workers (or, where they cannot start, onnxruntime-web here) once. */
let engine = null;   // {total, count, threadsEach, started: Promise | null}

function startEngine() {
  engine.started = engine.started || (async () => {
    inference = engine.count > 0 ? await startInferenceWorkers(engine.count, engine.threadsEach) : null;
    if (!inference) loadOrt(engine.total);
  })();
  return engine.started;
}

/* onnxruntime-web in inference workers (this same script, answering 'ort-*' messages). session.run
 * blocks the thread that calls it, so with the model here the Python work of each window (stitching,
 * note decoding, embeddings) and reading the next window's audio would wait for it; there, they run
 * while the next windows are computed. Two workers of one thread each, each computing its own window,
 * beat one worker of two threads (whose threads meet at every operator), and need no cross-origin
 * isolation: septimbre, 4 rounds alternated on a loaded 2-core machine, 1,134-1,142 ms against
 * 1,303-1,411 ms per window, outputs bit-identical. Null when workers cannot be started here (some
 * hosts load this script where nested workers are not allowed): the model then runs in this worker. */
let inference = null;   // {workers: [{call(msg, transfer) -> Promise<reply>}], threads (all together)} | null

async function startInferenceWorkers(count, threadsEach) {
  const workers = await Promise.all(Array.from({ length: count }, () => startInferenceWorker(threadsEach)));
  if (workers.some((w) => !w)) {
    for (const w of workers) if (w) w.terminate();
    return null;
  }
  return { workers, threads: workers.reduce((n, w) => n + w.threads, 0) };
}

async function startInferenceWorker(threads) {
  if (typeof Worker === 'undefined') return null;
  let worker;
  try {
    worker = new Worker(baseUrl + 'worker.js');
  } catch (e) {
    return null;
  }
  const pending = new Map();
  let nextId = 1;
  let stopped = null;    // the error that ended the second worker: later calls fail at once with it
  const failAll = (error) => { stopped = error; for (const p of pending.values()) p.reject(error); pending.clear(); };
  worker.onmessage = (event) => {
    const msg = event.data || {};
    const p = pending.get(msg.id);
    if (!p) return;
    pending.delete(msg.id);
    if (msg.type === 'ort-error') p.reject(new Error(msg.message)); else p.resolve(msg);
  };
  worker.onerror = (event) => {
    event.preventDefault();
    failAll(new Error(`the inference worker stopped: ${event.message || 'unknown error'}`));
  };
  const call = (msg, transfer) => new Promise((resolve, reject) => {
    if (stopped) { reject(stopped); return; }
    const id = nextId++;
    pending.set(id, { resolve, reject });
    worker.postMessage({ ...msg, id }, transfer || []);
  });
  try {
    const ready = await call({ type: 'ort-init', baseUrl, threads });
    return { call, threads: ready.threads, terminate: () => worker.terminate() };
  } catch (e) {
    console.warn(`timbreamt: running the model in this worker (${e.message || e})`);
    worker.terminate();
    return null;
  }
}

/* The second worker's side: one onnxruntime-web engine, sessions by URL, one run at a time (the
 * message queue below). */
const ortSessions = new Map();

async function handleOrt(msg) {
  if (msg.type === 'ort-init') {
    baseUrl = msg.baseUrl;
    return { threads: loadOrt(msg.threads) };
  }
  if (msg.type === 'ort-session') {
    const session = await createOrtSession(msg.bytes);
    ortSessions.set(msg.url, session);
    return { inputNames: session.inputNames, outputNames: session.outputNames };
  }
  if (msg.type === 'ort-run') {
    const session = ortSessions.get(msg.url);
    if (!session) throw new Error(`no session for ${msg.url}`);
    const t0 = performance.now();
    const out = await runOrt(session, msg.audio, msg.crop);
    const reply = { outputs: {}, ms: performance.now() - t0 };
    const transfer = [];
    for (const [name, t] of Object.entries(out)) {
      reply.outputs[name] = { data: t.data, dims: t.dims };
      transfer.push(t.data.buffer);
    }
    return { reply, transfer };
  }
  throw new Error(`unknown message type ${JSON.stringify(msg.type)}`);
}

async function createOrtSession(bytes) {
  // logSeverityLevel 3: our graphs' optional `crop` input (an initializer the browser never
  // overrides) would otherwise print a warning on every load
  return ort.InferenceSession.create(bytes, { executionProviders: ['wasm'], graphOptimizationLevel: 'all',
                                              logSeverityLevel: 3 });
}

/* One window through a local session -> {name: {data, dims}} (the data copied out of the WASM heap). */
async function runOrt(session, audio, crop) {
  const feeds = { audio: new ort.Tensor('float32', audio, [1, 1, audio.length]) };
  if (crop) feeds[crop.name] = new ort.Tensor('int64', BigInt64Array.from(crop.frames.map(BigInt)), [2]);
  const out = await session.run(feeds);
  const plain = {};
  for (const [name, t] of Object.entries(out)) {
    plain[name] = { data: t.data, dims: t.dims };
    if (t.dispose) t.dispose();
  }
  return plain;
}

/* Run Python, return a plain JS value (dicts as objects), free the proxy. */
function py(code) {
  const value = pyodide.runPython(code);
  if (!value || typeof value.toJs !== 'function') return value;
  const out = value.toJs({ dict_converter: Object.fromEntries });
  value.destroy();
  return out;
}

/* A named model ('basicamt') loads models/<name>.windowed.onnx when the bundle has it: the same graph
 * with its `crop` input required (onnxruntime-web cannot feed an optional one), so each window's
 * convolutions skip the context; else models/<name>.onnx. A URL loads as given. */
const modelUrls = new Map();   // model name or URL -> the URL loaded for it

async function getSession(model, progress) {
  let url = modelUrls.get(model);
  let resp = null;
  if (!url) {
    if (typeof model !== 'string' || !model) throw new Error(`model must be 'basicamt', 'septimbre' or a URL of an .onnx graph, got ${JSON.stringify(model)}`);
    if (/\.onnx$/.test(model)) {
      url = new URL(model, baseUrl).href;
    } else if (/^[a-z0-9_-]+$/i.test(model)) {
      url = baseUrl + 'models/' + model + '.windowed.onnx';
      resp = await fetch(url);
      if (!resp.ok) { url = baseUrl + 'models/' + model + '.onnx'; resp = null; }
    } else {
      throw new Error(`model must be 'basicamt', 'septimbre' or a URL of an .onnx graph, got ${JSON.stringify(model)}`);
    }
    modelUrls.set(model, url);
  }
  if (!sessions.has(url)) {
    progress('model', 0, 1);
    await startEngine();
    resp = resp || await fetch(url);
    if (!resp.ok) { modelUrls.delete(model); throw new Error(`model not found: ${url.replace(baseUrl, '')} (HTTP ${resp.status})`); }
    const bytes = new Uint8Array(await resp.arrayBuffer());
    let session;
    try {
      session = inference ? await remoteSession(url, bytes) : await createOrtSession(bytes);
    } catch (e) {
      throw new Error(`cannot load model ${url.replace(baseUrl, '')}: ${e.message || e}`);
    }
    const meta = readMetadata(bytes);
    if (session.inputNames[0] !== 'audio' || session.outputNames[0] !== 'onset' || session.outputNames[1] !== 'frame') {
      throw new Error(`${url.replace(baseUrl, '')} does not follow the timbreamt ONNX contract`);
    }
    sessions.set(url, { session, meta, canCrop: session.inputNames.includes(K.CROP_INPUT),
                        name: meta.model || url.split('/').pop().replace(/(\.windowed)?\.onnx$/, '') });
    progress('model', 1, 1);
  }
  return sessions.get(url);
}

/* A session in each inference worker: the graph's bytes go there (copies: this worker still reads its metadata). */
async function remoteSession(url, bytes) {
  const replies = await Promise.all(inference.workers.map((w) => {
    const copy = bytes.slice();
    return w.call({ type: 'ort-session', url, bytes: copy }, [copy.buffer]);
  }));
  return { remote: true, url, inputNames: replies[0].inputNames, outputNames: replies[0].outputNames };
}

/* Starts window i's inference -> Promise<{outputs: {name: {data, dims}}, ms}>. Remote: on worker i mod n
 * (each runs its windows in order); the samples are copied (the stream's buffer stays here) and the run
 * proceeds while this worker goes on. */
function startInference(session, i, samples, crop) {
  if (session.remote) {
    const audio = samples.slice();
    const w = inference.workers[i % inference.workers.length];
    return w.call({ type: 'ort-run', url: session.url, audio, crop }, [audio.buffer]);
  }
  const t0 = performance.now();
  return runOrt(session, samples, crop).then((outputs) => ({ outputs, ms: performance.now() - t0 }));
}

/* The graph's metadata_props (decoding defaults) read with Python's protobuf-free parser. */
function readMetadata(bytes) {
  const fn = pyodide.runPython('from timbreamt.core.graph_metadata import read_metadata; read_metadata');
  const result = fn(bytes);
  const meta = result.toJs({ dict_converter: Object.fromEntries });
  result.destroy();
  fn.destroy();
  return meta;
}

/* The audio of a job as {rate, frames, read(maxFrames) -> Float32Array mono | null}. */
async function openSource(msg) {
  if (msg.file) {
    const reader = await timbreamtWav.blobReader(msg.file);
    if (!reader) throw new Error('not a WAV file this reader knows (PCM 8/16/24/32-bit or float): decode it in the page first');
    if (reader.layout.frames === 0) throw new Error('audio is empty (0 samples)');
    return { rate: reader.layout.rate, frames: reader.layout.frames, read: (n) => reader.read(n) };
  }
  const { samples } = msg;
  if (!(samples instanceof Float32Array)) throw new Error('samples must be a Float32Array (mono)');
  if (samples.length === 0) throw new Error('audio is empty (0 samples)');
  const rate = msg.sampleRate;
  let next = 0;
  return { rate, frames: samples.length, read: async (n) => {
    if (next >= samples.length) return null;
    const piece = samples.subarray(next, next + n);
    next += piece.length;
    return piece;
  } };
}

function checkRate(rate) {
  if (!Number.isInteger(rate) || rate < 1000 || rate > 768000) {
    throw new Error(`sample rate must be a whole number of Hz between 1000 and 768000, got ${rate}`);
  }
}

/* numpy float32 array (PyProxy) -> Float32Array copy; frees the proxy. */
function toFloat32(proxy) {
  const buf = proxy.getBuffer('f32');
  const out = buf.data.slice();
  buf.release();
  proxy.destroy();
  return out;
}

/* The graph-rate stream: pulls pieces from the source, resamples them (Python, timbreamt.core.resample)
 * and keeps only the samples the next windows need. */
function graphStream(source) {
  const resampler = source.rate === K.GRAPH_SAMPLE_RATE ? null
    : pyodide.runPython('timbreamt.core.browser_job.BrowserResampler')(source.rate);
  let buf = new Float32Array(0);
  let bufStart = 0;              // graph-rate index of buf[0]
  let read = 0;                  // source frames read
  let done = false;
  const append = (piece) => {
    if (!piece.length) return;
    const grown = new Float32Array(buf.length + piece.length);
    grown.set(buf);
    grown.set(piece, buf.length);
    buf = grown;
  };
  return {
    /* samples [start, end) at the graph's rate */
    async window(start, end) {
      while (bufStart + buf.length < end && !done) {
        const piece = await source.read(Math.ceil(READ_SECONDS * source.rate));
        if (piece === null) {
          done = true;
          if (resampler) append(toFloat32(resampler.flush()));
          break;
        }
        for (let i = 0; i < piece.length; i += 1) {
          if (!Number.isFinite(piece[i])) throw new Error(`audio contains NaN or infinite samples at ${((read + i) / source.rate).toFixed(2)} s`);
        }
        read += piece.length;
        append(resampler ? toFloat32(resampler.process(piece)) : piece);
      }
      if (bufStart + buf.length < end) throw new Error(`the audio ended early: ${(read / source.rate).toFixed(1)} s read`);
      return buf.subarray(start - bufStart, end - bufStart);
    },
    /* forget samples before `start` */
    drop(start) {
      if (start > bufStart) { buf = buf.slice(Math.min(buf.length, start - bufStart)); bufStart = start; }
    },
    close() { if (resampler) resampler.destroy(); },
  };
}

/* Run one job; returns the 'result' reply. onProgress(stage, done, total) is optional. */
async function runJob(msg, onProgress) {
  const t0 = performance.now();
  const progress = onProgress || (() => {});
  const source = await openSource(msg);
  checkRate(source.rate);
  const { session, meta, name, canCrop } = await getSession(msg.model || 'septimbre', progress);
  const hasEmbedding = session.outputNames.includes('embedding');
  const opts = msg.options || {};
  // decoding defaults (the graph's metadata) and the instruments check: timbreamt.core.contract, as in the CLI
  const nGraph = py(`timbreamt.core.browser_job.graph_samples(${source.frames}, ${source.rate})`);
  const Job = pyodide.runPython('timbreamt.core.browser_job.BrowserJob');
  const instruments = msg.instruments === undefined ? 'auto' : msg.instruments;
  const metaProxy = pyodide.toPy(meta);
  let job;
  try {
    job = Job.callKwargs(nGraph, name, hasEmbedding, instruments, source.rate, {
      metadata: metaProxy, onset_threshold: opts.onsetThreshold ?? null, frame_threshold: opts.frameThreshold ?? null,
      min_note_frames: opts.minNoteFrames ?? null, melodia: opts.melodia ?? null, can_crop: canCrop,
      keep_embeddings: !!msg.keepEmbeddings,
      ...(opts.coreFrames ? { core_frames: opts.coreFrames } : {}),
    });
  } finally {
    metaProxy.destroy();
    Job.destroy();
  }
  const windowsProxy = job.window_list();
  const windows = windowsProxy.toJs();
  windowsProxy.destroy();
  const stream = graphStream(source);
  const maps = msg.returnMaps ? { onset: [], frame: [], embedding: [] } : null;
  // inference: the model's run time (summed over windows); waiting: the part of it this worker spent
  // idle (with the model in the second worker, reading and per-window Python run during the rest)
  const timings = { inference: 0, waiting: 0, postprocess: 0, reading: 0, windowPost: 0, finish: 0 };
  let kept = false;
  const running = [];     // windows sent to the model, in order, not yet taken back
  const readWindow = async (i) => {
    const tRead = performance.now();
    const samples = await stream.window(windows[i][0], windows[i][1]);
    timings.reading += performance.now() - tRead;
    return samples;
  };
  // with inference workers, one window per worker is in flight and the next one's audio is read ahead;
  // here the run holds this thread anyway, so windows go one at a time
  const inFlight = session.remote ? inference.workers.length : 1;
  let sent = 0;             // windows sent to the model
  let ahead = null;         // samples of window `sent`, read in advance
  const send = async () => {
    const samples = ahead || await readWindow(sent);
    ahead = null;
    const crop = canCrop ? { name: K.CROP_INPUT, frames: [windows[sent][4], windows[sent][5]] } : null;
    running.push(startInference(session, sent, samples, crop));
    sent += 1;
  };
  try {
    while (sent < Math.min(inFlight, windows.length)) await send();
    for (let i = 0; i < windows.length; i += 1) {
      const [inStart, , coreStart, coreEnd, cropStart] = windows[i];
      progress('inference', i, windows.length);
      if (session.remote && sent < windows.length && !ahead) ahead = await readWindow(sent);
      const tWait = performance.now();
      const { outputs: out, ms } = await running.shift();
      timings.waiting += performance.now() - tWait;
      timings.inference += ms;
      if (sent < windows.length) await send();   // computed while this window's notes are worked out below
      if (i + 1 < windows.length) stream.drop(windows[Math.min(sent, windows.length - 1)][0]);
      const frames = out.onset.dims[2];
      const tPost = performance.now();
      job.add(i, frames, out.onset.data, out.frame.data, hasEmbedding ? out.embedding.data : null);
      timings.windowPost += performance.now() - tPost;
      if (maps) {
        const first = Math.floor(inStart / K.GRAPH_HOP) + cropStart;   // the maps' first frame
        const lo = coreStart - first;
        const hi = coreEnd - first;
        maps.onset.push(sliceMap(out.onset.data, frames, lo, hi, K.N_PITCHES));
        maps.frame.push(sliceMap(out.frame.data, frames, lo, hi, K.N_PITCHES));
        if (hasEmbedding) maps.embedding.push(sliceMap(out.embedding.data, frames, lo, hi, K.EMBEDDING_DIM * K.N_PITCHES));
      }
    }
    progress(job.instruments != null ? 'clustering' : 'notes', windows.length, windows.length);
    const tPost = performance.now();
    const result = JSON.parse(job.finish());
    const midi = midiOf(job);
    timings.finish = performance.now() - tPost;
    timings.postprocess = timings.windowPost + timings.finish;
    timings.total = performance.now() - t0;
    const reply = resultReply(msg.id, result, midi);
    Object.assign(reply, { timings, windowed: canCrop, sampleRate: source.rate,
                           inferenceWorkers: session.remote ? inference.workers.length : 0,
                           threads: session.remote ? inference.threads : ort.env.wasm.numThreads });
    if (maps) {
      reply.maps = { onset: concatMaps(maps.onset, K.N_PITCHES), frame: concatMaps(maps.frame, K.N_PITCHES) };
      if (hasEmbedding) reply.maps.embedding = concatMaps(maps.embedding, K.EMBEDDING_DIM * K.N_PITCHES);
    }
    if (msg.keep !== false) {
      if (lastJob) lastJob.job.destroy();
      lastJob = { job };
      kept = true;
    }
    return reply;
  } finally {
    for (const r of running) r.catch(() => {});   // runs still going when a window failed: not needed
    stream.close();
    if (!kept) job.destroy();
  }
}

function midiOf(job) {
  const proxy = job.midi();
  const midi = proxy.toJs().slice().buffer;
  proxy.destroy();
  return midi;
}

function resultReply(id, result, midi) {
  const { warnings = [], auto_instruments: autoInstruments = null, regroupable = false } = result;
  delete result.warnings;
  delete result.auto_instruments;
  delete result.regroupable;
  return { type: 'result', id, transcription: result, warnings, autoInstruments, regroupable, midi };
}

/* The last job's notes in another number of instruments (no model run). */
function regroup(msg) {
  if (!lastJob) throw new Error('nothing to regroup: transcribe a file first');
  const t0 = performance.now();
  const text = lastJob.job.regroup(msg.instruments === undefined ? 'auto' : msg.instruments);
  const reply = resultReply(msg.id, JSON.parse(text), midiOf(lastJob.job));
  reply.timings = { total: performance.now() - t0 };
  return reply;
}

/* MIDI bytes and CSV of a result as the page shows it (renamed tracks, GM programs). */
function exportFiles(msg) {
  const fn = pyodide.runPython('timbreamt.core.browser_job.export_files');
  const programs = msg.programs ? pyodide.toPy(msg.programs) : null;
  try {
    const out = fn(JSON.stringify(msg.transcription), programs);
    const midiProxy = out.get('midi');
    const midi = midiProxy.toJs().slice().buffer;
    midiProxy.destroy();
    const csv = out.get('csv');
    out.destroy();
    return { type: 'exported', id: msg.id, midi, csv };
  } finally {
    fn.destroy();
    if (programs) programs.destroy();
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

/* One human line for any error: a Python exception's own message (its traceback goes to the
 * console), out-of-memory said as such. */
function humanMessage(e) {
  let text = String((e && e.message) || e);
  if (e && (e.type || /Traceback \(most recent call last\)/.test(text))) {
    console.error(text);
    const lines = text.trim().split('\n').filter((l) => l.trim());
    text = lines[lines.length - 1].replace(/^[\w.]*(Error|Exception|Warning)\s*:\s*/, '');
  }
  if (/memory|Out of bounds|allocat|bad_alloc|too large/i.test(text)) {
    return `out of memory: ${text} (try a shorter file or close other tabs)`;
  }
  return text.split('\n')[0];
}

/* Jobs run one at a time, in the order they arrive (a second transcription waits for the first). */
let queue = Promise.resolve();
self.onmessage = (event) => {
  const msg = event.data || {};
  queue = queue.then(() => handle(msg));
};

async function handle(msg) {
  try {
    if (typeof msg.type === 'string' && msg.type.startsWith('ort-')) {
      const out = await handleOrt(msg);
      const { reply, transfer } = out.reply ? out : { reply: out, transfer: [] };
      post({ type: 'ort-done', id: msg.id, ...reply }, transfer);
      return;
    }
    if (msg.type === 'init') {
      readyPromise = readyPromise || init(msg.baseUrl, msg.threads, { inferenceWorkers: msg.inferenceWorkers });
      post({ type: 'ready', ...(await readyPromise) });
      return;
    }
    if (!readyPromise) throw new Error('worker not initialised: send {type:"init"} first');
    await readyPromise;
    if (msg.type === 'transcribe') await transcribe(msg);
    else if (msg.type === 'load') {
      await getSession(msg.model, (stage, done, total) => post({ type: 'progress', id: msg.id, stage, done, total }));
      post({ type: 'loaded', id: msg.id });
    }
    else if (msg.type === 'regroup') { const r = regroup(msg); post(r, [r.midi]); }
    else if (msg.type === 'export') { const r = exportFiles(msg); post(r, [r.midi]); }
    else throw new Error(`unknown message type ${JSON.stringify(msg.type)}`);
  } catch (e) {
    if (typeof msg.type === 'string' && msg.type.startsWith('ort-')) post({ type: 'ort-error', id: msg.id, message: String((e && e.message) || e) });
    else post({ type: 'error', id: msg.id, message: humanMessage(e) });
  }
}
