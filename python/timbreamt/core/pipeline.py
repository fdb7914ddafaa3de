"""The post-processing pipeline: window outputs -> notes -> tracks (numpy only; runs in Pyodide).

``MapAccumulator`` takes each window's output (windows.py) and keeps only what decoding needs, in bounded memory:
the frame map as float16 (84 x frames: 52 MB per hour, in one buffer sized from the expected length so
it is never copied), the onset peaks (sparse), and for Septimbre one embedding per active (4-frame
block, pitch): the timbre encoder runs at a quarter of the frame rate, so a block's frames share one
embedding (the active frames' weighted mean for graphs that do not), and the weights come from the
frame map itself. That is 32 bytes per active block instead of 36 per active cell. ``finish`` decodes
notes and clusters them into tracks. The CLI and the browser both use this class, so they agree note for note.
"""
from __future__ import annotations

import numpy as np

from . import cluster
from . import notes
from .constants import CROP_MARGIN_FRAMES, EMBEDDING_DIM, FRAME_GRID, FRAMES_PER_SECOND, N_PITCHES, NOTE_CROP_MARGIN_FRAMES, PEAK_MARGIN
from .windows import Window
from .contract import DecodeOptions
from .count import CountModel, estimate_count
from .transcription import Note, Track, Transcription

AUTO_ONE_WARNING = ("one instrument found automatically; if there are more, give their number "
                    "(the automatic count is right on about half of the clips of 1-4 instruments)")


class MapAccumulator:
    """Collects window outputs in order (the file's length need not be known: a header can lie);
    ``finish`` returns tracks."""

    def __init__(self, options: DecodeOptions, with_embedding: bool = False, expected_frames: int | None = None) -> None:
        """expected_frames: the length announced by the file's header, if any. The frame buffer is
        allocated for it up front (pages untouched until written, so a header that lies long costs no
        memory) and grows by 1.5x if the audio turns out longer."""
        options.validate()
        self.options = options
        capacity = max(int(expected_frames or 0) + FRAME_GRID, 1024)
        self.frame_map = np.zeros((N_PITCHES, capacity), dtype=np.float16)
        self.peak_rows: list[np.ndarray] = []
        self.peak_frames: list[np.ndarray] = []
        self.with_embedding = with_embedding
        self.block_keys: list[np.ndarray] = []
        self.block_emb: list[np.ndarray] = []
        self.next_frame = 0

    @property
    def crop_margin(self) -> int:
        """Frames around each core the graph must compute exactly (see window_crop): the timbre
        encoder reaches farther than the note branch, so more when embeddings are pooled."""
        return CROP_MARGIN_FRAMES if self.with_embedding else NOTE_CROP_MARGIN_FRAMES

    def add(self, window: Window, onset: np.ndarray, frame: np.ndarray, embedding: np.ndarray | None = None,
            map_start: int | None = None) -> None:
        """Add one window's maps: onset, frame (84, F) and embedding (12, 84, F) for F frames starting
        at ``map_start`` (default window.frame_start; later when the graph cropped the window, see
        window_crop). F may include frames before and past the core."""
        first = window.frame_start if map_start is None else int(map_start)
        if window.core_start != self.next_frame:
            raise ValueError(f"windows must arrive in order: expected core start {self.next_frame}, "
                             f"got {window.core_start}")
        if onset.shape != frame.shape or onset.ndim != 2 or onset.shape[0] != N_PITCHES:
            raise ValueError(f"onset/frame maps must be ({N_PITCHES}, frames), got {onset.shape} and {frame.shape}")
        if not (np.isfinite(onset).all() and np.isfinite(frame).all()):
            raise ValueError("the model returned NaN or infinite probabilities")
        lo = window.core_start - first
        hi = window.core_end - first
        if lo < 0 or hi > frame.shape[1]:
            raise ValueError(f"window maps cover frames {first}..{first + frame.shape[1]}, the core needs "
                             f"{window.core_start}..{window.core_end}")
        core_frame = frame[:, lo:hi].astype(np.float16)
        self._store_frames(window.core_start, core_frame)
        # onset peaks of the core, computed with a few frames of context on each side
        a, b = max(0, lo - PEAK_MARGIN), min(frame.shape[1], hi + PEAK_MARGIN)
        # round through float16 like the stored frame map, so peaks match a whole-file decode
        fr = frame[:, a:b].astype(np.float16).astype(np.float32)
        on = onset[:, a:b].astype(np.float16).astype(np.float32)
        # (inferred onsets are exact from the slice's third frame on, and the margin covers that)
        inferred = notes.inferred_onsets(on, fr)
        rows, times = notes.onset_peaks(inferred, self.options.onset_threshold)
        times = times + a + first
        keep = (times >= window.core_start) & (times < window.core_end)
        self.peak_rows.append(rows[keep])
        self.peak_frames.append(times[keep])
        if self.with_embedding:
            if embedding is None:
                raise ValueError("this model has no embedding output")
            if window.core_start % FRAME_GRID or lo % FRAME_GRID:
                raise ValueError(f"windows must start on the {FRAME_GRID}-frame grid of the timbre encoder")
            keys, vectors = block_embeddings(embedding[:, :, lo:hi], core_frame, self.options.frame_threshold,
                                             window.core_start // FRAME_GRID)
            self.block_keys.append(keys)
            self.block_emb.append(vectors)
        self.next_frame = window.core_end

    def _store_frames(self, start: int, block: np.ndarray) -> None:
        end = start + block.shape[1]
        if end > self.frame_map.shape[1]:       # longer than announced: grow (rare: a header that lied)
            grown = np.zeros((N_PITCHES, max(end, int(self.frame_map.shape[1] * 1.5))), dtype=np.float16)
            grown[:, :start] = self.frame_map[:, :start]
            self.frame_map = grown
        self.frame_map[:, start:end] = block

    def decode(self) -> np.ndarray:
        """Note events (notes.NOTE_DTYPE) of the whole file."""
        o = self.options
        frame = self.frame_map[:, :self.next_frame]
        rows = np.concatenate(self.peak_rows) if self.peak_rows else np.zeros(0, np.int64)
        times = np.concatenate(self.peak_frames) if self.peak_frames else np.zeros(0, np.int64)
        order = np.lexsort((rows, times))
        return notes.decode_from_peaks(rows[order], times[order], frame, o.frame_threshold,
                                       o.min_note_frames, o.energy_tolerance, o.melodia)

    def finish(self, model: str, sample_rate: int, duration: float, instruments: int | str | None = None,
               hop_seconds: float = 1 / FRAMES_PER_SECOND) -> Transcription:
        """Decode, cluster into ``instruments`` tracks (an int, 'auto', or None/1 for one track)."""
        events = self.decode()
        # without an embedding, assign_tracks refuses any instruments but one track
        note_emb = self.note_embeddings(events) if instruments not in (None, 1) and self.with_embedding else None
        labels, k, warnings = assign_tracks(events, note_emb, instruments, self.options.count_model)
        return build_transcription(model, sample_rate, duration, events, labels, k, warnings, hop_seconds)

    def note_embeddings(self, events: np.ndarray) -> np.ndarray:
        """(n, D) L2-normalised embedding of each decoded note; frees the per-block embeddings
        (memory on long files), so call it once."""
        # keys are already ascending: windows arrive in time order and each window's blocks are
        # listed block-major; concatenate once and drop the per-window lists
        keys = np.concatenate(self.block_keys) if self.block_keys else np.zeros(0, np.int64)
        self.block_keys = []
        emb = np.concatenate(self.block_emb) if self.block_emb else np.zeros((0, EMBEDDING_DIM), np.float16)
        self.block_emb = []
        return cluster.note_embeddings(keys, emb, self.frame_map[:, :self.next_frame], self.options.frame_threshold,
                                       events["start"], events["end"], events["pitch"] - notes.MIDI_MIN,
                                       block_frames=FRAME_GRID)


def assign_tracks(events: np.ndarray, note_emb: np.ndarray | None, instruments: int | str | None,
                  count_model: CountModel | None = None) -> tuple[np.ndarray, int, list[str]]:
    """(labels (n,) int64, number of tracks k, warnings) for decoded ``events`` (notes.NOTE_DTYPE).

    instruments: None/1 (one track), 'auto' (estimated by ``count_model``, the graph's fitted
    estimator, else by the eigengap) or an int N; note_emb (n, D) is needed unless one track is
    asked. Cheap next to decoding: the page calls it again for another N without running the model
    (core/browser_job.py)."""
    warnings: list[str] = []
    labels = np.zeros(len(events), dtype=np.int64)
    if instruments in (None, 1):
        return labels, 1, warnings
    if note_emb is None:
        raise ValueError("separating instruments needs a model with an embedding output (septimbre)")
    if instruments == "auto":
        k = max(1, estimate_count(events["start"], events["end"], note_emb, count_model))
        if k == 1 and len(events) > 1:
            # "1" is the answer a user cannot tell is wrong (one track looks plausible): say how to do better
            warnings.append(AUTO_ONE_WARNING)
    else:
        k = int(instruments)
        if k < 1:
            raise ValueError(f"instruments must be >= 1 or 'auto', got {instruments}")
        if k > len(events):
            warnings.append(f"asked for {k} instruments but only {len(events)} notes were found: "
                            f"{k - len(events)} track(s) stay empty")
    if len(events):
        # timbre and register (cluster.instrument_labels): above the timbre-only grouping on OOD mixtures
        labels = cluster.instrument_labels(note_emb, events["pitch"], k,
                                           anchors=cluster.anchor_notes(events["amplitude"]))
    return labels, k, warnings


def build_transcription(model: str, sample_rate: int, duration: float, events: np.ndarray, labels: np.ndarray,
                        k: int, warnings: list[str], hop_seconds: float = 1 / FRAMES_PER_SECOND) -> Transcription:
    """Tracks of notes from decoded events and their track labels (0..k-1)."""
    tracks = [Track(f"Instrument {i + 1}" if k > 1 else "Notes") for i in range(max(k, 1))]
    velocities = notes.velocity_from_amplitude(events["amplitude"])
    for ev, label, vel in zip(events, labels, velocities):
        tracks[int(label)].notes.append(Note(int(ev["pitch"]), round(float(ev["start"] * hop_seconds), 6),
                                             round(float(ev["end"] * hop_seconds), 6), int(vel)))
    return Transcription(model, int(sample_rate), float(duration), tracks, list(warnings))


def block_embeddings(embedding: np.ndarray, frame: np.ndarray, frame_threshold: float,
                     first_block: int) -> tuple[np.ndarray, np.ndarray]:
    """One embedding per (FRAME_GRID-frame block, pitch) holding an active cell.

    embedding (D, 84, F) and frame (84, F) of F consecutive frames starting at block ``first_block``;
    a cell is active when frame >= frame_threshold. Returns keys (k,) int64 ascending, key = block *
    84 + pitch row, and vectors (k, D) float16: the frame-weighted mean of the block's active cells
    (for our graphs, whose embedding is constant over a block, exactly that embedding).
    """
    dim, n_pitches, n = embedding.shape
    if frame.shape != (n_pitches, n):
        raise ValueError(f"frame map {frame.shape} does not match the embedding {embedding.shape}")
    w = frame.astype(np.float32)
    w[w < frame_threshold] = 0.0
    n_blocks = -(-n // FRAME_GRID)
    pad = n_blocks * FRAME_GRID - n
    if pad:
        w = np.pad(w, ((0, 0), (0, pad)))
    w_blocks = w.reshape(n_pitches, n_blocks, FRAME_GRID)
    weight = w_blocks.sum(axis=2)                                           # (84, blocks)
    b_idx, p_idx = np.nonzero(weight.T > 0)                                 # block-major: keys ascend
    if not len(b_idx):
        return np.zeros(0, np.int64), np.zeros((0, dim), np.float16)
    frames = b_idx[:, None] * FRAME_GRID + np.arange(FRAME_GRID)            # (k, 4)
    valid = frames < n
    frames_c = np.minimum(frames, n - 1)
    cell_w = w_blocks[p_idx, b_idx]                                         # (k, 4)
    cell_w = np.where(valid, cell_w, 0.0)
    cells = embedding[:, p_idx[:, None], frames_c]                          # (D, k, 4)
    vectors = np.einsum("dkf,kf->kd", cells, cell_w) / weight[p_idx, b_idx][:, None]
    keys = (b_idx.astype(np.int64) + first_block) * n_pitches + p_idx
    return keys, vectors.astype(np.float16)
