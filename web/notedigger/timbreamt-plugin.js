/* timbreamt plugin for noteDigger: one <script> tag adds "timbreamt" entries to the analysis menu.
 *
 *   1. copy the timbreamt bundle folder into noteDigger as ./timbreamt/
 *   2. add to noteDigger's index.html:  <script src="./timbreamt/notedigger/timbreamt-plugin.js"></script>
 *
 * The entries transcribe the loaded audio with timbreamt (Septimbre, instruments auto-detected or a
 * number you choose) into new channels. Works with or without cross-origin isolation (one ORT thread
 * without it). Also callable: window.timbreamtPlugin.transcribe(audioBuffer, instruments).
 */
(function () {
  'use strict';
  const script = document.currentScript;
  const BASE = new URL('../', script ? script.src : location.href).href;   // the bundle folder
  let transcriberPromise = null;

  let api = null;   // the ES module: createTranscriber and mixdown (the same as the page's)

  function transcriber() {
    transcriberPromise = transcriberPromise || import(BASE + 'timbreamt.js')
      .then((m) => { api = m; return m.createTranscriber({ baseUrl: BASE }); });
    return transcriberPromise;
  }

  /* The loaded audio: noteDigger keeps no decoded copy, but its player holds the file's URL. */
  async function loadedAudio(app) {
    const el = app.AudioPlayer && app.AudioPlayer.audio;
    if (!el || !el.src) throw new Error('load an audio file first (File menu)');
    const bytes = await (await fetch(el.src)).arrayBuffer();
    return app.audioContext.decodeAudioData(bytes);
  }

  /* Notes into new noteDigger channels; returns the number of channels added. */
  function addTracks(app, result) {
    const chdiv = app.MidiAction.channelDiv;
    const msPerColumn = app.dt;                       // noteDigger's grid: one column per dt ms
    let added = 0;
    chdiv.switchUpdateMode(false);
    try {
      for (const track of result.tracks) {
        if (!track.notes.length) continue;
        const ch = chdiv.addChannel();
        if (!ch) { alert('timbreamt: no free channel left (noteDigger has 16): delete one and retry'); break; }
        ch.name = `timbreamt ${track.name}`;
        const notes = track.notes.map((n) => ({
          x1: n.start * 1000 / msPerColumn,
          x2: n.end * 1000 / msPerColumn,
          y: n.pitch - 24,
          ch: ch.index,
          selected: false,
          v: n.velocity,
        }));
        app.MidiAction.midi.push(...notes);
        added += 1;
      }
      app.MidiAction.midi.sort((a, b) => a.x1 - b.x1);
    } finally {
      chdiv.switchUpdateMode(true);
    }
    return added;
  }

  async function transcribe(audioBuffer, instruments = 'auto') {
    const app = window.app;
    const buffer = audioBuffer || await loadedAudio(app);
    const t = await transcriber();
    const result = await t.transcribe(api.mixdown(buffer), buffer.sampleRate, { model: 'septimbre', instruments });
    return { result, channels: addTracks(app, result) };
  }

  function addMenu(app) {
    const tab = window.menu && window.menu.tabs.find((t) => t.dataset.name === '分析');
    const list = tab ? tab.item : null;
    if (!list) { console.warn('timbreamt plugin: analysis menu not found'); return; }
    const entry = (label, pick) => {
      const li = document.createElement('li');
      li.textContent = label;
      li.className = 'timbreamt-entry';
      li.onclick = async () => {
        const instruments = pick();
        if (instruments === null) return;
        const old = li.textContent;
        li.textContent = 'timbreamt: transcribing…';
        try {
          const { result, channels } = await transcribe(null, instruments);
          console.log(`timbreamt: ${result.tracks.reduce((n, t) => n + t.notes.length, 0)} notes in ${channels} channel(s)`);
        } catch (e) {
          alert(`timbreamt: ${e.message || e}`);
        } finally {
          li.textContent = old;
        }
      };
      list.appendChild(li);
    };
    entry('timbreamt: transcribe (instruments auto)', () => 'auto');
    entry('timbreamt: transcribe N instruments…', () => {
      const v = prompt('Number of instruments (1-16)', '2');
      const n = parseInt(v, 10);
      return v === null ? null : (n >= 1 && n <= 16 ? n : 'auto');
    });
  }

  window.timbreamtPlugin = { transcribe, base: BASE };
  // noteDigger runs window.plugins at start-up, then sets it to null: queue or run now.
  window.plugins = window.plugins || [];
  window.plugins.push((app) => addMenu(app));
  if (window.app && document.readyState !== 'loading') {
    window.plugins.forEach((plugin) => plugin(window.app));
    window.plugins = null;
  }
}());
