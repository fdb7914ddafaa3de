import numpy as np
import pytest

torch = pytest.importorskip("torch")

from timbreamt.core import constants as C  # noqa: E402
from timbreamt.training.losses import distillation_loss, focal_loss, info_nce, note_loss  # noqa: E402
from timbreamt.training.models import build_model, count_parameters  # noqa: E402


def test_parameter_counts():
    basic = count_parameters(build_model("basicamt"))
    sept = count_parameters(build_model("septimbre"))
    assert 15_000 <= basic <= 20_000
    assert 40_000 <= sept <= 50_000


@pytest.mark.parametrize("neck_bins", C.NECK_BINS)
@pytest.mark.parametrize("name", ["basicamt", "septimbre"])
def test_output_shapes(name, neck_bins):
    model = build_model(name, conv2_rank=8, neck_bins=neck_bins).eval()
    with torch.no_grad():
        out = model(torch.randn(2, C.SAMPLE_RATE) * 0.1)
    frames = (C.SAMPLE_RATE - 1) // C.HOP + 1
    assert out["onset"].shape == (2, C.N_PITCHES, frames)
    assert out["frame"].shape == (2, C.N_PITCHES, frames)
    assert ((out["frame"] >= 0) & (out["frame"] <= 1)).all()
    if name == "septimbre":
        emb = out["embedding"]
        assert emb.shape == (2, C.EMBEDDING_DIM, C.N_PITCHES, frames)
        norms = emb.pow(2).sum(1).sqrt()
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)


@pytest.mark.parametrize("norm", ["window", "global"])
@pytest.mark.parametrize("n", [1, 256, C.SAMPLE_RATE // 2])
def test_finite_on_silence_and_tiny_inputs(norm, n):
    model = build_model("septimbre", norm=norm).eval()
    with torch.no_grad():
        for audio in (torch.zeros(1, n), torch.randn(1, n) * 1e-5, torch.rand(1, n) * 2 - 1):
            out = model(audio)
            for v in out.values():
                assert torch.isfinite(v).all()


@pytest.mark.parametrize("gain", [1e-3, 0.5, 3.0])
def test_features_are_gain_invariant(gain):
    model = build_model("basicamt").eval()
    rng = np.random.default_rng(0)
    t = np.arange(C.SAMPLE_RATE * 2) / C.SAMPLE_RATE
    audio = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (220.0, 330.0, 1250.0))
    audio = (audio + rng.standard_normal(len(t)) * 0.01).astype(np.float32)
    x = torch.from_numpy(audio)[None]
    with torch.no_grad():
        a = model.front.norm(model.front.cqt(x))
        b = model.front.norm(model.front.cqt(x * gain))
    assert torch.allclose(a, b, atol=2e-3)


def test_silence_gives_the_lowest_feature():
    model = build_model("basicamt").eval()
    with torch.no_grad():
        feat = model.front.norm(model.front.cqt(torch.zeros(1, C.SAMPLE_RATE)))
    assert torch.allclose(feat, torch.full_like(feat, float(np.log(np.float32(C.EPS)))))


def test_window_norm_is_local_but_global_is_not():
    """The default normalisation makes a frame independent of audio far away; the paper's does not."""
    rng = np.random.default_rng(1)
    base = (rng.standard_normal(C.SAMPLE_RATE * 12) * 0.05).astype(np.float32)
    loud_tail = base.copy()
    loud_tail[C.SAMPLE_RATE * 9:] *= 20
    for norm, should_match in (("window", True), ("global", False)):
        model = build_model("basicamt", norm=norm).eval()
        with torch.no_grad():
            a = model.front(torch.from_numpy(base)[None])[..., :200]
            b = model.front(torch.from_numpy(loud_tail)[None])[..., :200]
        assert torch.allclose(a, b, atol=1e-4) == should_match, norm


def test_harmonic_stacking_shifts():
    model = build_model("basicamt")
    assert model.front.shifts == [0, 36, 57, 72, 84, 93, 101, -36]


def test_focal_loss_prefers_right_answers():
    target = torch.tensor([[1.0, 0.0, 0.0]])
    good = torch.tensor([[4.0, -4.0, -4.0]])
    bad = -good
    assert focal_loss(good, target, 0.2) < focal_loss(bad, target, 0.2)


def test_distillation_loss_is_zero_only_at_the_teacher():
    torch.manual_seed(0)
    teacher_logits = {"onset": torch.randn(2, 84, 30) * 3, "frame": torch.randn(2, 84, 30) * 3}
    teacher = {k: torch.sigmoid(v) for k, v in teacher_logits.items()}
    same = {k: v.clone().requires_grad_(True) for k, v in teacher_logits.items()}
    loss = distillation_loss(same, teacher)
    loss.backward()
    assert abs(float(loss.detach())) < 1e-5
    assert all(float(v.grad.abs().max()) < 1e-9 for v in same.values())
    # elsewhere it is positive and pulls each probability towards the teacher's
    student = {k: (v + torch.randn_like(v)).requires_grad_(True) for k, v in teacher_logits.items()}
    loss = distillation_loss(student, teacher)
    loss.backward()
    assert float(loss.detach()) > 0.01
    for key, v in student.items():
        expected = (torch.sigmoid(v.detach()) - teacher[key]) / v.numel()
        assert torch.allclose(v.grad, expected, atol=1e-9)
    # the teacher gets no gradient even when its maps require one
    teacher_grad = {k: v.clone().requires_grad_(True) for k, v in teacher.items()}
    distillation_loss({k: v.detach().clone().requires_grad_(True) for k, v in student.items()}, teacher_grad).backward()
    assert all(v.grad is None for v in teacher_grad.values())


def test_info_nce_rewards_separated_embeddings():
    part = torch.full((1, 84, 10), -1, dtype=torch.long)
    part[0, 10, :] = 0
    part[0, 40, :] = 1
    separated = torch.zeros(1, 12, 84, 10)
    separated[0, 0, 10] = 1
    separated[0, 1, 40] = 1
    mixed = torch.zeros(1, 12, 84, 10)
    mixed[0, 0] = 1
    assert info_nce(separated, part) < info_nce(mixed, part) - 0.1
    # a single instrument gives no contrastive term
    solo = part.clone()
    solo[solo == 1] = 0
    assert float(info_nce(separated, solo)) == 0.0


def test_tiny_training_run_lowers_loss():
    torch.manual_seed(0)
    model = build_model("basicamt")
    sr = C.SAMPLE_RATE
    t = np.arange(sr) / sr
    audio = np.zeros((2, sr), np.float32)
    frame = torch.zeros(2, 84, (sr - 1) // C.HOP + 1)
    onset = torch.zeros_like(frame)
    for b, midi in enumerate((60, 67)):
        f = 440 * 2 ** ((midi - 69) / 12)
        audio[b, sr // 4:] = 0.3 * np.sin(2 * np.pi * f * t[sr // 4:])
        start = int(round(0.25 * C.FRAMES_PER_SECOND))
        frame[b, midi - 24, start:] = 1
        onset[b, midi - 24, start] = 1
    x = torch.from_numpy(audio)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = note_loss(model.forward_logits(x), frame, onset)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.front.clamp_affine()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0], losses
    assert C.AFFINE_K_RANGE[0] <= float(model.front.k.detach()) <= C.AFFINE_K_RANGE[1]


@pytest.mark.parametrize("neck_bins", C.NECK_BINS)
def test_fused_note_heads_give_the_same_maps(neck_bins):
    torch.manual_seed(3)
    model = build_model("basicamt", neck_bins=neck_bins)
    with torch.no_grad():      # non-trivial BatchNorm statistics, so the folding is exercised
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    model.eval()
    audio = torch.randn(1, 22050 * 2) * 0.1
    with torch.no_grad():
        want = model(audio)
        model.notes.fuse_heads()
        got = model(audio)
    assert model.notes.fused_heads.out_channels == 8
    for key in ("onset", "frame"):
        assert torch.allclose(want[key], got[key], atol=1e-5), key
    model.train()
    with pytest.raises(RuntimeError, match="inference"):
        model.notes.fuse_heads()


def test_low_rank_conv2_from_svd():
    """A full conv2 factorised at rank 24 (its full rank) gives the same maps; rank 8 keeps part of
    its energy and has fewer parameters; a product re-factorises through its full kernel (rank 8 ->
    rank 4 keeps less, a product -> the full convolution is exact)."""
    from timbreamt.training.checkpoints import load_note_weights

    torch.manual_seed(4)
    full = build_model("basicamt").eval()
    ckpt = {"model": full.state_dict(), "config": {"model": "basicamt"}}
    audio = torch.randn(1, 22050) * 0.1
    exact = build_model("basicamt", conv2_rank=24).eval()
    assert load_note_weights(exact, ckpt, "full") == pytest.approx(1.0)
    with torch.no_grad():
        want, got = full(audio), exact(audio)
    for key in ("onset", "frame"):
        assert torch.allclose(want[key], got[key], atol=1e-5), key
    low = build_model("basicamt", conv2_rank=8).eval()
    kept = load_note_weights(low, ckpt, "full")
    assert 0.3 < kept < 1.0
    assert count_parameters(low) < count_parameters(full) - 6000
    low_ckpt = {"model": low.state_dict(), "config": {"model": "basicamt", "conv2_rank": 8}}
    lower = build_model("basicamt", conv2_rank=4)
    assert 0.1 < load_note_weights(lower, low_ckpt, "low") < 1.0
    back = build_model("basicamt").eval()
    assert load_note_weights(back, low_ckpt, "low") == 1.0
    with torch.no_grad():
        want, got = low(audio), back(audio)
    for key in ("onset", "frame"):
        assert torch.allclose(want[key], got[key], atol=1e-5), key
    with pytest.raises(ValueError, match="rank"):
        build_model("basicamt", conv2_rank=25)


@pytest.mark.parametrize("time_first", [False, True])
def test_low_rank_product_equals_its_kernel(time_first):
    """Either order, the product is the full 25 x 3 dilated convolution of LowRankConv.kernel()."""
    from timbreamt.training.models import LowRankConv, conv

    torch.manual_seed(10)
    product = LowRankConv(8, time_first=time_first)
    with torch.no_grad():
        for p in product.parameters():
            p.normal_(0, 0.2)
        weight, bias = product.kernel()
        full = conv(16, 8, (25, 3), dilation=(3, 1))
        full.weight.copy_(weight)
        full.bias.copy_(bias)
        x = torch.randn(1, 16, 90, 20)
        assert torch.allclose(product(x), full(x), atol=1e-4)
    assert (product.freq.in_channels, product.time.in_channels) == ((8, 16) if time_first else (16, 8))


def test_time_first_conv2_starts_from_a_freq_first_one():
    """A frequency-first rank-8 conv2 re-factorises time first by SVD of its kernel (part of the
    energy kept; the rest of the branch as it was); time first needs a low rank."""
    from timbreamt.training.checkpoints import load_note_weights, note_shape

    torch.manual_seed(11)
    src = build_model("basicamt", conv2_rank=8).eval()
    ckpt = {"model": src.state_dict(), "config": {"model": "basicamt", "conv2_rank": 8}}
    assert note_shape(ckpt)["conv2_time_first"] is False
    dst = build_model("basicamt", conv2_rank=8, conv2_time_first=True).eval()
    kept = load_note_weights(dst, ckpt, "src")
    assert 0.3 < kept < 1.0
    want, got = src.notes.conv2[0].kernel()[0], dst.notes.conv2[0].kernel()[0]
    assert float(((want - got) ** 2).sum() / (want ** 2).sum()) == pytest.approx(1 - kept, abs=1e-4)
    assert torch.equal(dst.notes.neck[0].weight, src.notes.neck[0].weight)
    assert count_parameters(dst) < count_parameters(src)
    with pytest.raises(ValueError, match="conv2_time_first needs a low-rank conv2"):
        build_model("basicamt", conv2_time_first=True)


def test_small_kernels_start_from_the_central_taps():
    """A 5 x 5 note branch starts a 3 x 3 one from its kernels' central taps (conv2 of any rank loads
    as it is); a 3 x 3 branch cannot become 5 x 5, and only 3 and 5 exist."""
    from timbreamt.core.errors import DataError
    from timbreamt.training.checkpoints import load_note_weights, note_shape

    torch.manual_seed(6)
    big = build_model("basicamt", conv2_rank=8).eval()
    ckpt = {"model": big.state_dict(), "config": {"model": "basicamt", "conv2_rank": 8}}
    assert note_shape(ckpt) == {"conv2_rank": 8, "conv_kernel": 5, "neck_bins": 252, "conv2_time_first": False,
                              "neck_kernel": 5}
    small = build_model("septimbre", conv2_rank=8, conv_kernel=3)
    assert load_note_weights(small, ckpt, "big") == pytest.approx(1.0)
    for layer in ("conv1", "neck"):
        w_small = getattr(small.notes, layer)[0].weight
        assert w_small.shape[-2:] == (3, 3)
        assert torch.equal(w_small, getattr(big.notes, layer)[0].weight[:, :, 1:4, 1:4]), layer
        assert torch.equal(getattr(small.notes, layer)[0].bias, getattr(big.notes, layer)[0].bias), layer
    assert torch.equal(small.notes.conv2[0].freq.weight, big.notes.conv2[0].freq.weight)
    assert count_parameters(build_model("basicamt", conv2_rank=8, conv_kernel=3)) == count_parameters(big) - 2 * 16 * 8 * 16
    with pytest.raises(DataError, match="3 x 3 kernels cannot become 5 x 5"):
        load_note_weights(build_model("basicamt", conv2_rank=8), {"model": small.state_dict(), "config": {
            "model": "basicamt", "conv2_rank": 8, "conv_kernel": 3}}, "small")
    with pytest.raises(ValueError, match="conv_kernel"):
        build_model("basicamt", conv_kernel=4)


def test_neck_kernel_alone_starts_from_its_central_taps():
    """--neck-kernel 3 with conv1 at 5 x 5: only the neck is cut to its central taps (conv1 and conv2
    load as they are); a checkpoint records it, older ones (no neck_kernel) have conv1's; an 84-row
    neck keeps its 3 pitch rows and loses time taps only; the neck alone cannot grow back to 5 x 5."""
    from timbreamt.core.errors import DataError
    from timbreamt.training.checkpoints import load_note_weights, note_shape, shape_flags

    torch.manual_seed(16)
    big = build_model("basicamt", conv2_rank=8, conv2_time_first=True).eval()
    ckpt = {"model": big.state_dict(), "config": {"model": "basicamt", "conv2_rank": 8, "conv2_time_first": True}}
    neck3 = build_model("basicamt", conv2_rank=8, conv2_time_first=True, neck_kernel=3)
    assert (neck3.notes.conv_kernel, neck3.notes.neck_kernel) == (5, 3)
    assert load_note_weights(neck3, ckpt, "big") == pytest.approx(1.0)
    assert torch.equal(neck3.notes.conv1[0].weight, big.notes.conv1[0].weight)
    assert torch.equal(neck3.notes.neck[0].weight, big.notes.neck[0].weight[:, :, 1:4, 1:4])
    assert torch.equal(neck3.notes.conv2[0].freq.weight, big.notes.conv2[0].freq.weight)
    assert count_parameters(neck3) == count_parameters(big) - 16 * 8 * 16
    cfg = {"model": "basicamt", "conv2_rank": 8, "conv2_time_first": True, "neck_kernel": 3}
    shape = note_shape({"model": neck3.state_dict(), "config": cfg})
    assert (shape["conv_kernel"], shape["neck_kernel"]) == (5, 3)
    assert "--conv-kernel 5 --neck-kernel 3" in shape_flags(shape)
    assert note_shape({"config": {"model": "basicamt", "conv_kernel": 3}})["neck_kernel"] == 3
    with pytest.raises(DataError, match="3 x 3 kernels cannot become 5 x 5"):
        load_note_weights(build_model("basicamt", conv2_rank=8, conv2_time_first=True),
                          {"model": neck3.state_dict(), "config": cfg}, "neck3")
    pitch_ckpt = {"model": build_model("basicamt", conv2_rank=8, neck_bins=C.N_PITCHES).state_dict(),
                  "config": {"model": "basicamt", "conv2_rank": 8, "neck_bins": C.N_PITCHES}}
    pitch3 = build_model("basicamt", conv2_rank=8, neck_bins=C.N_PITCHES, neck_kernel=3)
    load_note_weights(pitch3, pitch_ckpt, "pitches")
    assert torch.equal(pitch3.notes.neck[0].weight, pitch_ckpt["model"]["notes.neck.0.weight"][:, :, :, 1:4])
    with pytest.raises(ValueError, match="neck_kernel"):
        build_model("basicamt", neck_kernel=7)


@pytest.mark.parametrize("rank", [0, 8])
def test_pitch_neck_is_the_bin_neck_at_each_semitone_centre(rank):
    """Loaded from a 252-row branch, the 84-row one's strided conv2 gives exactly the 252-row conv2's
    output at bins 3j + 1 (the bin of MIDI 24 + j) in its centre phase, full or low rank, and its
    neck, fed the bins of each semitone as phases, gives exactly the 252-row neck at those bins."""
    from timbreamt.training.checkpoints import load_note_weights

    torch.manual_seed(8)
    bins = build_model("basicamt", conv2_rank=rank).eval()
    pitches = build_model("basicamt", conv2_rank=rank, neck_bins=C.N_PITCHES).eval()
    load_note_weights(pitches, {"model": bins.state_dict(), "config": {"model": "basicamt", "conv2_rank": rank}}, "bins")
    x = torch.randn(1, 16, C.STACKED_BINS, 40)
    with torch.no_grad():
        want, got = bins.notes.conv2(x), pitches.notes.conv2(x)
        assert got.shape == (1, 24, C.N_PITCHES, 40)
        assert torch.allclose(got[:, 8:16], want[:, :, 1::3], atol=1e-5)
        assert not torch.allclose(got[:, 8:16], want[:, :, 0::3], atol=1e-2)
        feat = torch.relu(torch.randn(1, 8, C.STACKED_BINS, 40))
        phases = torch.cat([feat[:, :, p::3] for p in range(3)], dim=1)
        want_neck, got_neck = bins.notes.neck[0](feat), pitches.notes.neck[0](phases)
    assert torch.allclose(got_neck, want_neck[:, :, 1::3], atol=1e-5)


def test_pitch_neck_starts_from_a_bin_neck():
    """A 252-row checkpoint starts an 84-row branch: front end and conv1 load as they are, conv2's
    outputs repeat per phase, the heads' kernels fold each bin row into the nearest pitch row (sums
    kept, taps where they belong); 5 x 5 -> 3 x 3 at the same time works; an 84-row branch cannot
    become a 252-row one; only 252 and 84 exist."""
    from timbreamt.core.errors import DataError
    from timbreamt.training.checkpoints import fold_rows_to_pitches, load_note_weights, note_shape

    torch.manual_seed(9)
    bins = build_model("basicamt", conv2_rank=8).eval()
    ckpt = {"model": bins.state_dict(), "config": {"model": "basicamt", "conv2_rank": 8}}
    assert note_shape(ckpt) == {"conv2_rank": 8, "conv_kernel": 5, "neck_bins": 252, "conv2_time_first": False,
                              "neck_kernel": 5}
    pitches = build_model("septimbre", conv2_rank=8, neck_bins=C.N_PITCHES)
    assert load_note_weights(pitches, ckpt, "bins") == pytest.approx(1.0)
    got, want = pitches.notes.state_dict(), bins.notes.state_dict()
    for key in ("conv1.0.weight", "conv2.0.freq.weight"):
        assert torch.equal(got[key], want[key]), key
    for key in ("conv2.0.time.weight", "conv2.0.time.bias", "conv2.1.running_var"):
        assert torch.equal(got[key], want[key].repeat(3, *[1] * (want[key].dim() - 1))), key
    assert torch.equal(pitches.front.k, bins.front.k)
    assert got["neck.0.weight"].shape == (16, 24, 3, 5)
    assert torch.allclose(got["neck.0.weight"].sum((1, 2)), want["neck.0.weight"].sum((1, 2)), atol=1e-5)
    for key in ("frame_head.weight", "onset_head.0.weight"):
        assert got[key].shape == (*want[key].shape[:2], 3, want[key].shape[3]), key
        assert torch.allclose(got[key].sum(2), want[key].sum(2), atol=1e-6), key
    # the onset head's 7 bin rows (offsets -3..3) -> pitch rows -1, -1, 0, 0, 0, +1, +1
    onset = want["onset_head.0.weight"]
    folded = fold_rows_to_pitches(onset, 3)
    assert torch.allclose(folded[:, :, 0], onset[:, :, 0] + onset[:, :, 1])
    assert torch.allclose(folded[:, :, 1], onset[:, :, 2:5].sum(2))
    assert torch.allclose(folded[:, :, 2], onset[:, :, 5] + onset[:, :, 6])
    small = build_model("basicamt", conv2_rank=8, conv_kernel=3, neck_bins=C.N_PITCHES)
    load_note_weights(small, ckpt, "bins")
    assert small.notes.neck[0].weight.shape == (16, 24, 3, 3)
    with pytest.raises(DataError, match="84-row neck cannot become a 252-row one"):
        load_note_weights(build_model("basicamt", conv2_rank=8), {"model": pitches.state_dict(), "config": {
            "model": "basicamt", "conv2_rank": 8, "neck_bins": 84}}, "pitches")
    with pytest.raises(ValueError, match="neck_bins"):
        build_model("basicamt", neck_bins=126)


@pytest.mark.parametrize("name", ["basicamt", "septimbre"])
def test_crop_drops_frames_and_keeps_the_rest(name):
    torch.manual_seed(5)
    model = build_model(name, conv2_rank=8).eval()
    audio = torch.randn(1, 22050 * 3) * 0.1
    c0, c1 = 64, 40
    with torch.no_grad():
        whole = model(audio)
        cut = model(audio, crop=torch.tensor([c0, c1]))
    for key, v in whole.items():
        frames = v.shape[-1]
        assert cut[key].shape[-1] == frames - c0 - c1, key
        m = 32      # the receptive field of the convolutions after the cut (chunks.CROP_MARGIN_FRAMES)
        diff = (cut[key][..., m:-m] - v[..., c0 + m:frames - c1 - m]).abs().max()
        assert diff < 1e-5, (key, float(diff))
