/* Shared by the two drop-in workers: loads timbreamt's worker code and speaks noteDigger's contract. */
'use strict';
importScripts(self.TIMBREAMT_BASE + 'worker.js');   // defines init() and runJob()

const HOP_SECONDS = 256 / 22050;

function toEvents(track) {
  return track.notes.map((n) => ({
    onset: Math.round(n.start / HOP_SECONDS),
    offset: Math.round(n.end / HOP_SECONDS),
    note: n.pitch,
    velocity: n.velocity,
  }));
}

function timbreamtDropIn(kind) {
  let k = null;
  let started = null;
  self.onmessage = async ({ data }) => {
    if (typeof data === 'number') { k = data; return; }
    try {
      started = started || init(self.TIMBREAMT_BASE);
      await started;
      const config = await (await fetch(self.TIMBREAMT_BASE + 'notedigger/config.json')).json();
      // noteDigger sums the channels; our features are gain invariant, so the sum is as good as a mean
      const reply = await runJob({ samples: data, sampleRate: 44100, model: config[kind],
        instruments: kind === 'septimbre' ? (k || 'auto') : 1 });
      const tracks = reply.transcription.tracks.map(toEvents);
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
