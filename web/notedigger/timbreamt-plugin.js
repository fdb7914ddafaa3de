/* timbreamt plugin for noteDigger: one <script> tag adds "timbreamt" entries to the analysis menu.
 *
 *   1. copy the timbreamt bundle folder into noteDigger as ./timbreamt/
 *   2. add to noteDigger's index.html:  <script src="./timbreamt/notedigger/timbreamt-plugin.js"></script>
 *
 * The entries transcribe the loaded audio with timbreamt (Septimbre, instruments auto-detected or a
 * number asked in noteDigger's own dialog) into new channels named "timbreamt 1/3 · run 2". Works with
 * or without cross-origin isolation (one ORT thread without it). Also callable:
 * window.timbreamtPlugin.transcribe(audioBuffer, instruments).
 *
 * The plugin also hosts the engine for the drop-in workers (notedigger/*_worker.js): noteDigger starts a
 * fresh worker for every AI call, so those workers ask this page's long-lived engine over a
 * BroadcastChannel instead of loading onnxruntime-web and Python again each time.
 */
(function () {
  'use strict';
  const script = document.currentScript;
  const BASE = new URL('../', script ? script.src : location.href).href;   // the bundle folder
  const CHANNEL = 'timbreamt-engine';
  const hostId = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  let transcriberPromise = null;
  let api = null;   // the ES module: createTranscriber and mixdown (the same as the page's)
  let runs = 0;     // transcriptions added to this session: numbers the channel names
  let midiMin = null;   // noteDigger's row 0 is the graphs' lowest pitch (constants.json MIDI_MIN)

  function transcriber() {
    transcriberPromise = transcriberPromise || import(BASE + 'timbreamt.js')
      .then((m) => { api = m; return m.createTranscriber({ baseUrl: BASE }); })
      .catch((e) => { transcriberPromise = null; throw e; });
    return transcriberPromise;
  }

  /* The loaded audio: noteDigger keeps no decoded copy, but its player holds the file's URL. */
  async function loadedAudio(app) {
    const el = app.AudioPlayer && app.AudioPlayer.audio;
    if (!el || !el.src) throw new Error('load an audio file first (File menu)');
    const bytes = await (await fetch(el.src)).arrayBuffer();
    return app.audioContext.decodeAudioData(bytes);
  }

  /* Notes into new noteDigger channels, named "timbreamt i/n · run r"; returns the channels added. */
  function addTracks(app, result) {
    const chdiv = app.MidiAction.channelDiv;
    const msPerColumn = app.dt;                       // noteDigger's grid: one column per dt ms
    const tracks = result.tracks.filter((t) => t.notes.length);
    runs += 1;
    const names = [];
    chdiv.switchUpdateMode(false);
    try {
      tracks.forEach((track, i) => {
        const ch = chdiv.addChannel();
        if (!ch) throw new Error('no free channel left (noteDigger has 16): delete one and retry');
        ch.name = `timbreamt ${i + 1}/${tracks.length} · run ${runs}`;
        names.push(ch.name);
        const notes = track.notes.map((n) => ({
          x1: n.start * 1000 / msPerColumn,
          x2: n.end * 1000 / msPerColumn,
          y: n.pitch - midiMin,
          ch: ch.index,
          selected: false,
          v: n.velocity,
        }));
        app.MidiAction.midi.push(...notes);
      });
      app.MidiAction.midi.sort((a, b) => a.x1 - b.x1);
    } finally {
      chdiv.switchUpdateMode(true);
    }
    return names;
  }

  async function transcribe(audioBuffer, instruments = 'auto') {
    const app = window.app;
    const buffer = audioBuffer || await loadedAudio(app);
    const t = await transcriber();
    midiMin = t.constants.MIDI_MIN;
    const result = await t.transcribe(api.mixdown(buffer), buffer.sampleRate, { model: 'septimbre', instruments });
    const names = addTracks(app, result);
    return { result, channels: names.length, names };
  }

  /* The number of instruments, asked in noteDigger's own dialog (its .request-cover card):
   * resolves to 1..16, or null when cancelled. Invalid input keeps the dialog open with a message. */
  function askInstruments() {
    return new Promise((resolve) => {
      const holder = document.createElement('div');
      holder.innerHTML = `
        <div class="request-cover timbreamt-ask">
          <div class="card hvCenter"><label class="title">timbreamt: how many instruments?</label>
            <div class="layout layout-first"><span>Instruments (1-16):&nbsp;</span>
              <input type="text" inputmode="numeric" name="ui-ask" value="2" size="4"></div>
            <div class="layout timbreamt-ask-error" style="color:#ff8080;min-height:1.2em"></div>
            <div class="layout"><button class="ui-cancel">Cancel</button><button class="ui-confirm">OK</button></div>
          </div>
        </div>`;
      const card = holder.firstElementChild;
      const input = card.querySelector('input');
      const error = card.querySelector('.timbreamt-ask-error');
      const [cancelBtn, okBtn] = card.getElementsByTagName('button');
      const close = (value) => {
        card.style.opacity = 0;
        setTimeout(() => card.remove(), 200);
        resolve(value);
      };
      const check = () => {
        const text = input.value.trim();
        const n = Number(text);
        const ok = /^\d+$/.test(text) && n >= 1 && n <= 16;
        error.textContent = ok ? '' : `"${text}" is not a number of instruments: give a whole number from 1 to 16`;
        okBtn.disabled = !ok;
        return ok ? n : null;
      };
      input.addEventListener('input', check);
      okBtn.addEventListener('click', () => { const n = check(); if (n !== null) close(n); });
      cancelBtn.addEventListener('click', () => close(null));
      card.addEventListener('keydown', (e) => {
        if (e.key === 'Enter') okBtn.click();
        if (e.key === 'Escape') cancelBtn.click();
        e.stopPropagation();   // noteDigger's own shortcuts must not fire while typing here
      });
      document.body.insertBefore(card, document.body.firstChild);
      input.focus();
      input.select();
    });
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
        const instruments = await pick();
        if (instruments === null) return;
        const old = li.textContent;
        li.textContent = 'timbreamt: transcribing…';
        try {
          const { result, names } = await transcribe(null, instruments);
          console.log(`timbreamt: ${result.tracks.reduce((n, t) => n + t.notes.length, 0)} notes in ${names.join(', ')}`);
        } catch (e) {
          alert(`timbreamt: ${e.message || e}`);
        } finally {
          li.textContent = old;
        }
      };
      list.appendChild(li);
    };
    entry('timbreamt: transcribe (instruments auto)', async () => 'auto');
    entry('timbreamt: transcribe N instruments…', askInstruments);
  }

  /* Engine host for the drop-in workers: answers pings, runs their jobs on this page's transcriber. */
  function hostEngine() {
    if (typeof BroadcastChannel === 'undefined') return;
    const bc = new BroadcastChannel(CHANNEL);
    bc.onmessage = async ({ data }) => {
      if (!data || (data.host && data.host !== hostId)) return;
      if (data.type === 'ping') { bc.postMessage({ type: 'pong', id: data.id, host: hostId }); return; }
      if (data.type !== 'job') return;
      try {
        const t = await transcriber();
        window.timbreamtPlugin.hostedJobs += 1;
        const reply = await t.transcribeDetailed(data.samples, data.sampleRate, { model: data.model, instruments: data.instruments });
        bc.postMessage({ type: 'result', id: data.id, transcription: reply.transcription });
      } catch (e) {
        bc.postMessage({ type: 'error', id: data.id, message: String((e && e.message) || e) });
      }
    };
  }

  window.timbreamtPlugin = { transcribe, askInstruments, base: BASE, hostedJobs: 0 };
  hostEngine();
  // noteDigger runs window.plugins at start-up, then sets it to null: queue or run now.
  window.plugins = window.plugins || [];
  window.plugins.push((app) => addMenu(app));
  if (window.app && document.readyState !== 'loading') {
    window.plugins.forEach((plugin) => plugin(window.app));
    window.plugins = null;
  }
}());
