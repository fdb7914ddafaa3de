/* Shared by the two drop-in workers: speaks noteDigger's worker contract with timbreamt's engine.
 *
 * noteDigger starts a fresh worker for every AI call and ends it after the reply, so an engine loaded
 * here would be loaded again each call (onnxruntime-web + Python: seconds). When the page also runs
 * timbreamt-plugin.js, its long-lived engine answers on a BroadcastChannel and this worker only
 * forwards the job; otherwise it loads the engine itself (timbreamt's worker.js). */
'use strict';
importScripts(self.TIMBREAMT_BASE + 'worker.js');   // defines init() and runJob()

const ENGINE_CHANNEL = 'timbreamt-engine';
const PING_MS = 300;

function toEvents(track, hopSeconds) {
  return track.notes.map((n) => ({
    onset: Math.round(n.start / hopSeconds),
    offset: Math.round(n.end / hopSeconds),
    note: n.pitch,
    velocity: n.velocity,
  }));
}

/* The page's engine (timbreamt-plugin.js), if one answers: a function running a job there, else null. */
async function pageEngine() {
  if (typeof BroadcastChannel === 'undefined') return null;
  const bc = new BroadcastChannel(ENGINE_CHANNEL);
  const id = `${Date.now()}-${Math.random()}`;
  const host = await new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), PING_MS);
    bc.onmessage = ({ data }) => { if (data && data.type === 'pong' && data.id === id) { clearTimeout(timer); resolve(data.host); } };
    bc.postMessage({ type: 'ping', id });
  });
  if (!host) { bc.close(); return null; }
  return (job) => new Promise((resolve, reject) => {
    bc.onmessage = ({ data }) => {
      if (!data || data.id !== id || (data.type !== 'result' && data.type !== 'error')) return;
      bc.close();
      if (data.type === 'error') reject(new Error(data.message)); else resolve(data.transcription);
    };
    bc.postMessage({ type: 'job', id, host, ...job });
  });
}

function timbreamtDropIn(kind) {
  let k = null;
  self.onmessage = async ({ data }) => {
    if (typeof data === 'number') { k = data; return; }
    try {
      const constants = await (await fetch(self.TIMBREAMT_BASE + 'constants.json')).json();
      const config = await (await fetch(self.TIMBREAMT_BASE + 'notedigger/config.json')).json();
      // noteDigger sums the channels; our features are gain invariant, so the sum is as good as a mean
      const job = { samples: data, sampleRate: constants.GRAPH_SAMPLE_RATE, model: config[kind],
                    instruments: kind === 'septimbre' ? (k || 'auto') : 1 };
      const remote = await pageEngine();
      let transcription;
      if (remote) {
        transcription = await remote(job);
      } else {
        await init(self.TIMBREAMT_BASE);
        transcription = (await runJob({ ...job, keep: false })).transcription;
      }
      const tracks = transcription.tracks.map((t) => toEvents(t, constants.HOP_SECONDS));
      if (kind === 'basicamt') {
        self.postMessage(tracks[0]);
      } else {
        // noteDigger reduces over each track's notes: an empty track would throw there
        self.postMessage(tracks.filter((t) => t.length > 0));
      }
    } catch (e) {
      self.postMessage({ type: 'error', message: String((e && e.message) || e) });
    }
  };
}
