/* WAV reading shared by the page (imported as a module for its side effect) and the worker
 * (importScripts): defines self.timbreamtWav. Samples come out exactly as the CLI reads them
 * (libsndfile: integer PCM / 2^(bits-1), floats as they are, channels averaged in float32), so the
 * page and the CLI start from bit-identical input. Browsers' decodeAudioData scales 16-bit PCM by
 * 1/32767 for positive samples only (measured in Chromium: a 3e-5 asymmetric distortion that moved
 * the maps by 4e-4), hence this reader.
 *
 * A file is read in pieces (layout from the first bytes, then decodePcm on slices), so an hour of
 * audio never has to sit in memory at once.
 */
(function (root) {
  'use strict';

  /* The layout of a RIFF/WAVE file from its first bytes: {format, channels, rate, bits, dataStart,
   * frames} (frames clamped to totalBytes), null when it is not a WAV this reader knows, or
   * {needBytes: n} when the header runs past the bytes given. */
  function wavLayout(view, totalBytes) {
    const tag = (o) => String.fromCharCode(view.getUint8(o), view.getUint8(o + 1), view.getUint8(o + 2), view.getUint8(o + 3));
    if (view.byteLength < 12 || tag(0) !== 'RIFF' || tag(8) !== 'WAVE') return null;
    let fmt = null;
    let pos = 12;
    while (pos + 8 <= totalBytes) {
      if (pos + 8 > view.byteLength) return { needBytes: pos + 8 + 65536 };
      const id = tag(pos);
      const size = view.getUint32(pos + 4, true);
      const body = pos + 8;
      if (id === 'fmt ' && size >= 16) {
        if (body + Math.min(size, 40) > view.byteLength) return { needBytes: body + size };
        let format = view.getUint16(body, true);
        if (format === 0xfffe && size >= 26) format = view.getUint16(body + 24, true);   // WAVE_FORMAT_EXTENSIBLE
        fmt = { format, channels: view.getUint16(body + 2, true), rate: view.getUint32(body + 4, true),
                bits: view.getUint16(body + 14, true) };
      } else if (id === 'data' && fmt) {
        const { format, channels, rate, bits } = fmt;
        const known = (format === 1 && [8, 16, 24, 32].includes(bits)) || (format === 3 && [32, 64].includes(bits));
        if (!known || channels < 1 || rate < 1) return null;
        const frameBytes = (bits / 8) * channels;
        const frames = Math.floor(Math.min(size, totalBytes - body) / frameBytes);
        return { format, channels, rate, bits, dataStart: body, frames, frameBytes };
      }
      pos = body + size + (size & 1);
    }
    return null;
  }

  /* frames of PCM starting at byte `offset` of `view` -> mono Float32Array (channel mean). */
  function decodePcm(view, offset, frames, layout) {
    const { format, channels, bits } = layout;
    const width = bits / 8;
    const v = view;
    const sample = format === 3
      ? (bits === 32 ? (o) => v.getFloat32(o, true) : (o) => Math.fround(v.getFloat64(o, true)))
      : bits === 8 ? (o) => (v.getUint8(o) - 128) / 128
      : bits === 16 ? (o) => v.getInt16(o, true) / 32768
      : bits === 24 ? (o) => ((v.getUint8(o + 2) << 24 | v.getUint8(o + 1) << 16 | v.getUint8(o) << 8) >> 8) / 8388608
      : (o) => v.getInt32(o, true) / 2147483648;
    const out = new Float32Array(frames);
    const stride = width * channels;
    if (channels === 1 && format === 1 && bits === 16) {          // the common case, without the closure
      for (let i = 0, o = offset; i < frames; i += 1, o += 2) out[i] = v.getInt16(o, true) / 32768;
      return out;
    }
    for (let c = 0; c < channels; c += 1) {
      for (let i = 0, o = offset + c * width; i < frames; i += 1, o += stride) out[i] += Math.fround(sample(o));
    }
    if (channels > 1) for (let i = 0; i < frames; i += 1) out[i] /= channels;
    return out;
  }

  /* A whole WAV in memory -> {samples (mono), sampleRate, channels}, or null if not a known WAV. */
  function parseWav(arrayBuffer) {
    const view = new DataView(arrayBuffer);
    const layout = wavLayout(view, view.byteLength);
    if (!layout || layout.needBytes) return null;
    return { samples: decodePcm(view, layout.dataStart, layout.frames, layout), sampleRate: layout.rate,
             channels: layout.channels };
  }

  /* The layout of a WAV Blob/File (reads only its header), or null. */
  async function blobLayout(blob) {
    let want = Math.min(blob.size, 1 << 20);
    for (;;) {
      const view = new DataView(await blob.slice(0, want).arrayBuffer());
      const layout = wavLayout(view, blob.size);
      if (!layout || !layout.needBytes) return layout;
      if (want >= blob.size) return null;
      want = Math.min(blob.size, Math.max(layout.needBytes, want * 2));
    }
  }

  /* Reads a WAV Blob piece by piece: {layout, read(maxFrames) -> Float32Array mono | null at the end}. */
  async function blobReader(blob) {
    const layout = await blobLayout(blob);
    if (!layout) return null;
    let next = 0;
    return {
      layout,
      async read(maxFrames) {
        if (next >= layout.frames) return null;
        const n = Math.min(maxFrames, layout.frames - next);
        const start = layout.dataStart + next * layout.frameBytes;
        const view = new DataView(await blob.slice(start, start + n * layout.frameBytes).arrayBuffer());
        next += n;
        return decodePcm(view, 0, n, layout);
      },
    };
  }

  root.timbreamtWav = { wavLayout, decodePcm, parseWav, blobLayout, blobReader };
}(typeof self !== 'undefined' ? self : globalThis));
