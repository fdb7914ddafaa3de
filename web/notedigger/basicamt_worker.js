/* Drop-in replacement for noteDigger's dataProcess/AI/basicamt_worker.js (same message contract).
 * Install: copy the timbreamt bundle to noteDigger/timbreamt/, then copy this file over
 * noteDigger/dataProcess/AI/basicamt_worker.js. Gets the samples (Float32Array, 44.1 kHz); replies
 * [{onset, offset, note, velocity}] in model frames (hop 256 at 22050 Hz), or {type:'error', message}.
 */
'use strict';
self.TIMBREAMT_BASE = self.TIMBREAMT_BASE || new URL('../../timbreamt/', self.location.href).href;
importScripts(self.TIMBREAMT_BASE + 'notedigger/dropin_common.js');
timbreamtDropIn('basicamt');
