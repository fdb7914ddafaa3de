"""Septimbre's harder training mixtures (issue 18 item 3): same-family pairs in overlapping registers,
procedural instruments told apart, labels on the harmonic cells where ghost notes sit, and the encoder
started from another run."""
import numpy as np
import pytest

from timbreamt.core import constants as C

torch = pytest.importorskip("torch")

from timbreamt.core.errors import DataError  # noqa: E402
from timbreamt.training.train import ClipSampler, label_harmonics, timbre_family, timbre_identity  # noqa: E402

SR = C.SAMPLE_RATE
SECONDS = 10.0
# solo clips: (program, its two pitches); every pitch belongs to one clip, so a labelled cell names its
# clip, and pitches lie >= 2 semitones apart, so each has its own spectral peak
SOLO = [(40, (60, 67)),      # violin, family 5
        (41, (62, 69)),      # viola, family 5: the hard partner of the violin
        (0, (65, 72)),       # piano, family 0 alone: its partner can only share its register (the viola's)
        (1002, (48, 55)),    # two procedural instruments of one family (pluck): two different instruments
        (1002, (50, 57)),
        (40, (74, 79)),      # the violin again (the other soundfont): the same instrument as clip 0
        (33, (84, 91))]      # bass family 4, alone in its register too
PITCH_CLIP = {p: i for i, (_, pitches) in enumerate(SOLO) for p in pitches}


def hz(pitch: float) -> float:
    return 440.0 * 2 ** ((pitch - 69) / 12)


def write_solo_clips(folder) -> None:
    """Each clip alternates its two pitches every 0.5 s as sine tones, labelled exactly."""
    t = np.arange(int(SECONDS * SR)) / SR
    for i, (program, pitches) in enumerate(SOLO):
        audio = np.zeros_like(t)
        notes = []
        for j in range(int(SECONDS / 0.5)):
            pitch = pitches[j % 2]
            a, b = int(j * 0.5 * SR), int((j + 1) * 0.5 * SR)
            fade = np.minimum(1.0, np.minimum(np.arange(b - a), np.arange(b - a)[::-1]) / (0.02 * SR))
            audio[a:b] = 0.5 * fade * np.sin(2 * np.pi * hz(pitch) * t[a:b])   # faded: no clicks between notes
            notes.append((pitch, j * 0.5, (j + 1) * 0.5, 0))
        np.savez(folder / f"clip_{i:06d}.npz", audio=audio.astype(np.float16), notes=np.array(notes, np.float32),
                 programs=np.array([program], np.int16), soundfont=np.int16(i % 2))
    # a rendered mixture: the only clip a Septimbre sampler reads besides the dynamic ones
    np.savez(folder / "clip_000099.npz", audio=np.zeros(int(SECONDS * SR), np.float16),
             notes=np.array([[36, 0, 10, 0], [38, 0, 10, 1]], np.float32), programs=np.array([1, 2], np.int16),
             soundfont=np.int16(0))


def parts_by_clip(part_roll: np.ndarray) -> dict[int, int]:
    """{part label: solo clip index} from a part roll (84, T); asserts each part's cells come from one clip."""
    out = {}
    for k in np.unique(part_roll[part_roll >= 0]):
        clips = {PITCH_CLIP[int(r) + C.MIDI_MIN] for r in np.nonzero(part_roll == k)[0]}
        assert len(clips) == 1, f"part {k} holds notes of clips {clips}"
        out[int(k)] = clips.pop()
    return out


def test_hard_mixtures_pair_one_family_in_one_register_and_labels_follow_the_audio(tmp_path):
    write_solo_clips(tmp_path)
    sampler = ClipSampler(tmp_path, 2.0, np.random.default_rng(1), multi_part_only=True, dynamic_mix=1.0,
                          hard_mix=1.0)
    batch = sampler.batch(48, noise_prob=0.0)
    identity = [timbre_identity({"programs": np.array([p])}, i) for i, (p, _) in enumerate(SOLO)]
    family = [timbre_family(p) for p, _ in SOLO]
    pairs, checked_cells = set(), 0
    for b in range(48):
        part = batch["part"][b].numpy()
        if batch["audio"][b].abs().max() < 1e-3:          # the 4% silent examples carry no notes
            continue
        clips = parts_by_clip(part)
        assert 0 in clips and 1 in clips and len(clips) <= 4
        first, second = clips[0], clips[1]
        pairs.add(frozenset((first, second)))
        # different instruments throughout: never the violin twice (clips 0 and 5, two soundfonts)
        assert len({identity[c] for c in clips.values()}) == len(clips)
        if first in (0, 1, 3, 4, 5):                       # a same-family partner exists: it is chosen
            assert family[second] == family[first]
        if first in (0, 1, 3, 4):                          # one in the same register too: that one
            lo = max(min(SOLO[first][1]), min(SOLO[second][1]))
            hi = min(max(SOLO[first][1]), max(SOLO[second][1]))
            assert hi - lo >= 3                            # and their registers overlap
        # the audio holds each labelled note: at a frame where only (pitch p) of part k sounds, the
        # spectrum peaks at p's frequency, not at the other instruments' pitches
        audio = batch["audio"][b].numpy().astype(np.float64)
        frame_roll = batch["frame"][b].numpy()
        half = 4096 // C.HOP + 2                          # frames an 8192-sample window reaches either side
        for t in range(half, part.shape[1] - half, 3):
            steady = frame_roll[:, t - half:t + half + 1]
            active = np.nonzero(steady.all(axis=1))[0]     # notes sounding over the whole window
            if not len(active):
                continue
            win = audio[t * C.HOP - 4096:t * C.HOP + 4096]
            spec = np.abs(np.fft.rfft(win * np.hanning(len(win)), 32768))
            freqs = np.fft.rfftfreq(32768, 1 / SR)

            def level(pitch: int) -> float:
                return float(spec[np.argmin(np.abs(freqs - hz(pitch)))])
            silent = [p for p in PITCH_CLIP if not steady[p - C.MIDI_MIN].any()]
            loudest_silent = max(level(p) for p in silent)
            for row in active:
                assert level(row + C.MIDI_MIN) > 5 * loudest_silent
                checked_cells += 1
    assert checked_cells > 30
    # the procedural pair (one program, two instruments) and the string pair both occur
    assert frozenset((3, 4)) in pairs
    assert frozenset((0, 1)) in pairs or frozenset((5, 1)) in pairs


def test_plain_dynamic_mixtures_are_unchanged_without_hard_mix(tmp_path):
    write_solo_clips(tmp_path)
    a = ClipSampler(tmp_path, 2.0, np.random.default_rng(3), multi_part_only=True, dynamic_mix=1.0).batch(6, 0.0)
    b = ClipSampler(tmp_path, 2.0, np.random.default_rng(3), multi_part_only=True, dynamic_mix=1.0,
                    hard_mix=0.0).batch(6, 0.0)
    assert torch.equal(a["audio"], b["audio"]) and torch.equal(a["part"], b["part"])


def test_harmonic_labels_mark_silent_octave_and_twelfth_cells_only():
    n_frames = 100
    seconds = n_frames / C.FRAMES_PER_SECOND
    # part 0 at 48 (octave 60, twelfth 67); part 1 plays 67 itself, so that cell keeps its real label
    notes = np.array([[48, 0.0, seconds, 0], [67, 0.0, seconds / 2, 1]], np.float32)
    from timbreamt.training.data import piano_rolls

    part = piano_rolls(notes, n_frames)["part"]
    out = label_harmonics(part, notes, n_frames, np.random.default_rng(0), 1.0)
    row = {p: p - C.MIDI_MIN for p in (48, 60, 67, 79, 86)}
    assert (out[row[48]] == 0).all() and (out[row[60]] == 0).all()
    half = n_frames // 2
    assert (out[row[67], :half] == 1).all()               # a real note keeps its part
    assert (out[row[67], half + 1:] == 0).all()            # then the twelfth of 48 is silent: part 0's
    assert (out[row[79], :half] == 1).all() and (out[row[86], :half] == 1).all()   # part 1's harmonics
    assert (out[row[79], half + 1:] == -1).all()           # nothing sounds there once part 1 stopped
    untouched = np.ones(part.shape[0], bool)
    untouched[[row[p] for p in row]] = False
    assert np.array_equal(out[untouched], part[untouched])
    # share 0 labels nothing
    assert np.array_equal(label_harmonics(part, notes, n_frames, np.random.default_rng(0), 0.0), part)


def test_harmonic_labels_leave_note_targets_alone(tmp_path):
    write_solo_clips(tmp_path)
    plain = ClipSampler(tmp_path, 2.0, np.random.default_rng(5), multi_part_only=True).batch(4, 0.0)
    harmonic = ClipSampler(tmp_path, 2.0, np.random.default_rng(5), multi_part_only=True,
                           harmonic_labels=1.0).batch(4, 0.0)
    # the mixture clip: parts 0 (36) and 1 (38) sound; their harmonics 48, 55, 50, 57 get labelled
    assert torch.equal(plain["frame"], harmonic["frame"]) and torch.equal(plain["onset"], harmonic["onset"])
    for b in range(4):
        if plain["frame"][b].sum() == 0:
            continue
        rows = set(torch.nonzero(harmonic["part"][b] >= 0)[:, 0].tolist())
        assert rows == {p - C.MIDI_MIN for p in (36, 38, 48, 55, 50, 57)}


@pytest.mark.parametrize("kwargs, message", [({"dynamic_mix": 0.0, "hard_mix": 0.5}, "needs --dynamic-mix"),
                                             ({"dynamic_mix": 1.0, "hard_mix": 1.5}, "--hard-mix must be"),
                                             ({"harmonic_labels": -0.1}, "--harmonic-labels must be")])
def test_bad_shares_are_refused(tmp_path, kwargs, message):
    write_solo_clips(tmp_path)
    with pytest.raises(DataError, match=message):
        ClipSampler(tmp_path, 2.0, np.random.default_rng(0), multi_part_only=True, **kwargs)


def test_encoder_from_loads_the_timbre_encoder_of_a_septimbre_checkpoint_only(tmp_path):
    from timbreamt.training.models import build_model
    from timbreamt.training.train import load_encoder_weights

    source = build_model("septimbre")
    with torch.no_grad():
        for p in source.timbre.parameters():
            p.add_(torch.randn_like(p))
    torch.save({"model": source.state_dict(), "config": {"model": "septimbre"}}, tmp_path / "sept.pt")
    torch.save({"model": build_model("basicamt").state_dict(), "config": {"model": "basicamt"}}, tmp_path / "b.pt")
    target = build_model("septimbre")
    notes_before = {k: v.clone() for k, v in target.state_dict().items() if not k.startswith("timbre.")}
    load_encoder_weights(target, str(tmp_path / "sept.pt"))
    for k, v in target.state_dict().items():
        expected = source.state_dict()[k] if k.startswith("timbre.") else notes_before[k]
        assert torch.equal(v, expected), k
    with pytest.raises(DataError, match="not a Septimbre checkpoint"):
        load_encoder_weights(target, str(tmp_path / "b.pt"))
