"""Every number of the system, in one place (the paper's constants: arXiv 2509.12712, section 3).

Numpy-free and import-free, so that Pyodide, the runtime, training and the web bundle (which writes
the browser's part of it to ``constants.json``) all read the same values."""

# --- signal front end -------------------------------------------------------------------------
SAMPLE_RATE = 22050            # analysis rate of the networks, Hz
GRAPH_SAMPLE_RATE = 2 * SAMPLE_RATE   # 44100: input rate of the exported ONNX graphs (halved inside the graph)
HOP = 256                      # samples per frame at SAMPLE_RATE
GRAPH_HOP = 2 * HOP            # input samples per frame at GRAPH_SAMPLE_RATE
HOP_SECONDS = HOP / SAMPLE_RATE
FRAMES_PER_SECOND = SAMPLE_RATE / HOP   # ~86.13

BINS_PER_OCTAVE = 36
N_OCTAVES = 8
N_BINS = BINS_PER_OCTAVE * N_OCTAVES    # 288
FMIN = 32.07955284             # Hz: one third of a semitone below MIDI 24
FILTER_SCALE = 1.0
DOWNSAMPLE_TAPS = 33           # Hamming FIR used forward and backward (zero phase)
DOWNSAMPLE_CUTOFF = 0.5        # relative to Nyquist

# Energy normalisation: feature = log(energy / norm + EPS). EPS must survive float32 export
# bit for bit (float32(1e-8) can be folded away as "zero" by some ONNX runtimes; 1.01e-8 cannot).
EPS = 1.01e-8
# The normaliser (a std or RMS of per-frame total energy) is floored so that digital silence and
# one-frame inputs give finite, very negative features instead of inf/NaN.
NORM_FLOOR = 1e-12
# Window of the local energy statistic (frames, odd): ~3 s. A local statistic keeps chunked
# inference equal to whole-file inference (the paper's global std does not).
NORM_WINDOW_FRAMES = 259

# Chunked inference starts windows at multiples of this many samples at SAMPLE_RATE (4 frames: the
# timbre encoder's stride); the CQT's polyphase decimators are laid out so such chunks stay exact.
FRAME_GRID = 4                 # frames: the timbre encoder's stride; window starts are multiples of it
WINDOW_GRID_SAMPLES = FRAME_GRID * HOP

# Name of our graphs' optional int64 (2,) input: frames dropped after the front end, before the
# convolutions (models.crop_frames); its default [0, 0] keeps every frame.
CROP_INPUT = "crop"

AFFINE_K_RANGE = (0.005, 3.0)

# harmonic stacking: shifts in bins for harmonics 1..7 and one sub-harmonic
HARMONICS = (1, 2, 3, 4, 5, 6, 7)
SUBHARMONIC_SHIFT = -BINS_PER_OCTAVE
STACKED_BINS = 252             # 7 octaves kept after stacking

# --- pitches ----------------------------------------------------------------------------------
N_PITCHES = 84
MIDI_MIN = 24
MIDI_MAX = MIDI_MIN + N_PITCHES - 1   # 107
BINS_PER_SEMITONE = 3
# rows of the note branch after conv2: the paper's three bins per semitone, or one row per pitch
NECK_BINS = (STACKED_BINS, N_PITCHES)

EMBEDDING_DIM = 12

# --- training ---------------------------------------------------------------------------------
FOCAL_ALPHA_FRAME = 0.2        # weight of negatives (positives get 1 - alpha)
FOCAL_ALPHA_ONSET = 0.06
FOCAL_GAMMA = 1.0
INFONCE_TEMPERATURE = 0.15

# --- note decoding (defaults; tuned on our own validation renders) ---------------------------
ONSET_THRESHOLD = 0.5
FRAME_THRESHOLD = 0.3
MIN_NOTE_FRAMES = 6
ENERGY_TOLERANCE = 11
# Thresholds for graphs whose metadata carries none (the reference models): noteDigger's values.
REFERENCE_THRESHOLDS = {"basicamt": (0.38, 0.22), "septimbre": (0.35, 0.31)}
# Bounds of the user's options (one check for the CLI, the API and the page: contract.py)
MAX_INSTRUMENTS = 16           # tracks a transcription may be split into (MIDI has 15 pitched channels + reuse)
MAX_NOTE_MS = 60_000.0         # --min-note-ms above a minute would drop every note
# onnxruntime threads per session and worker processes of a batch: more is a typo, and each costs memory
MAX_THREADS = 256
MAX_JOBS = 256

# --- chunked inference (windows.py), in frames --------------------------------------------------
# A frame's receptive field is the CQT's lowest-octave kernel (~0.8 s each side) + the energy window
# (1.5 s each side) + the convolutions, so ~3 s of context each side makes windows exact.
CORE_FRAMES = 1536             # ~17.8 s: measured on 10 min of Septimbre (2 threads, ORT arena shrunk per
                               # window), peak RSS 182 / 213 / 271 MiB at 1024 / 1536 / 2048 frames, time
                               # within noise at 1536 and 2048, ~8% more at 1024
CONTEXT_FRAMES = 264           # ~3.1 s: covers the receptive field of our graphs; a multiple of FRAME_GRID
PEAK_MARGIN = 3                # frames of context needed by inferred onsets + peak picking
CROP_MARGIN_FRAMES = 32        # frames kept beyond the core by graphs that take a ``crop``, when the timbre
                               # embedding is used: the encoder's convolutions reach 30 frames; a multiple of FRAME_GRID
NOTE_CROP_MARGIN_FRAMES = 12   # the same when only the note maps are used: the note branch reaches 9 frames, + PEAK_MARGIN

# --- GM programs ------------------------------------------------------------------------------
# Programs never used in training: evaluation on them measures unheard timbres.
HELDOUT_PROGRAMS = (6, 11, 15, 22, 25, 42, 66, 69)
TRAIN_PROGRAMS = (
    0, 1, 2, 4, 5, 7, 8, 12, 13, 16, 19, 21, 24, 26, 27, 32, 33, 35, 40, 41, 43, 46, 48, 52,
    56, 57, 58, 60, 61, 64, 65, 67, 68, 70, 71, 72, 73, 74, 79, 80, 81, 104, 105,
)
TRAIN_SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf3/MuseScore_General_Full.sf3",
)
# music21 composers reserved for outside evaluation: never trained or tuned on.
RESERVED_COMPOSERS = (
    "beethoven", "mozart", "haydn", "monteverdi", "joplin", "chopin", "schumann_clara", "beach",
)
