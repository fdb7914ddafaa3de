"""BasicAMT (note model) and Septimbre (note + timbre embedding), in torch.

Shapes: audio (batch, samples) at 22050 Hz -> onset, frame (batch, 84, frames) probabilities and, for
Septimbre, embedding (batch, 12, 84, frames), L2-normalised over the 12 channels.
Every normalisation at inference is per frame or over a bounded time window, so chunked inference with
enough context equals whole-file inference.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..core import constants as C
from .cqt import CQT


class EnergyNorm(nn.Module):
    """CQT (batch, 2, 288, T) -> log energy features (batch, 288, T), exactly gain invariant.

    feature = log(energy / max(stat, NORM_FLOOR) + EPS), where stat measures the per-frame total
    energy over time:
    - mode "global" (the paper's statistic): its sample std over the whole input; output then depends
      on the file's length, and chunks disagree with the whole file;
    - mode "window" (default): its root mean square over a centred window of NORM_WINDOW_FRAMES
      frames: local, so chunked inference equals whole-file inference. RMS, not std: a windowed
      E[x^2] - E[x]^2 cancels catastrophically in float32 on steady notes.
    EPS is added to the normalised energy (the paper adds it to the raw energy, then subtracts
    log(std)): the result is the same up to a gain-dependent EPS, but ours is exactly gain invariant
    and digital silence maps to the lowest feature, log(EPS), instead of log(EPS / floor), a
    mid-level value that made silence look like broadband sound.
    """

    def __init__(self, mode: str = "window") -> None:
        super().__init__()
        if mode not in ("window", "global"):
            raise ValueError(f"unknown energy normalisation {mode!r}")
        self.mode = mode
        self.register_buffer("eps", torch.tensor(C.EPS, dtype=torch.float32), persistent=False)
        self.register_buffer("floor", torch.tensor(C.NORM_FLOOR, dtype=torch.float32), persistent=False)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        energy = spec[:, 0] ** 2 + spec[:, 1] ** 2                     # (B, 288, T)
        total = energy.sum(dim=1, keepdim=True)                        # (B, 1, T)
        if self.mode == "global":
            mean = total.mean(dim=2, keepdim=True)
            n = total.shape[2]
            stat = torch.sqrt(((total - mean) ** 2).sum(dim=2, keepdim=True) / max(n - 1, 1))
        else:
            w = C.NORM_WINDOW_FRAMES
            stat = torch.sqrt(F.avg_pool1d(total * total, w, stride=1, padding=w // 2, count_include_pad=False))
        # Floor: silence (stat 0) and one frame (0/0 in the std) must not give inf/NaN; where() also
        # replaces NaN, which clamp would pass through.
        stat = torch.where(stat > self.floor, stat, self.floor)
        return torch.log(energy / stat + self.eps)


def crop_frames(feat: torch.Tensor, crop: torch.Tensor | None) -> torch.Tensor:
    """Features (B, C, T) -> (B, C, T - crop[0] - crop[1]): drop crop[0] frames at the start and
    crop[1] at the end (crop: int64 (2,), or None to keep all). Inference only: a windowed runtime
    computes the front end (whose energy statistic needs ~3 s of context) over the whole window but
    the convolutions (which need 9 frames, the encoder 30) only over the frames it keeps. Written as
    a Gather over a Range so the exported graph takes ``crop`` as a tensor, not a traced constant."""
    if crop is None:
        return feat
    keep = torch.arange(crop[0], feat.shape[-1] - crop[1], device=feat.device)
    return feat.index_select(-1, keep)


class FrontEnd(nn.Module):
    """audio (B, samples) -> harmonically stacked features (B, 8, 252, T)."""

    def __init__(self, norm: str = "window") -> None:
        super().__init__()
        self.cqt = CQT()
        self.norm = EnergyNorm(norm)
        self.k = nn.Parameter(torch.tensor(0.1))
        self.b = nn.Parameter(torch.tensor(0.0))
        shifts = [round(C.BINS_PER_OCTAVE * torch.log2(torch.tensor(float(h))).item()) for h in C.HARMONICS]
        self.shifts = shifts + [C.SUBHARMONIC_SHIFT]
        self.pad_low = max(0, -min(self.shifts))
        self.pad_high = max(0, max(self.shifts) + C.STACKED_BINS - C.N_BINS)

    def clamp_affine(self) -> None:
        with torch.no_grad():
            self.k.clamp_(*C.AFFINE_K_RANGE)

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """Normalised log-energy CQT (B, 288, T), before the learnable affine."""
        return self.norm(self.cqt(audio))

    def stack(self, feat: torch.Tensor) -> torch.Tensor:
        """(B, 288, T) -> harmonically stacked (B, 8, 252, T)."""
        padded = F.pad(feat, (0, 0, self.pad_low, self.pad_high))
        chans = [padded[:, self.pad_low + s: self.pad_low + s + C.STACKED_BINS] for s in self.shifts]
        return torch.stack(chans, dim=1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.stack(self.features(audio) * self.k + self.b)


def conv(cin: int, cout: int, kernel: tuple[int, int], stride: tuple[int, int] = (1, 1),
         dilation: tuple[int, int] = (1, 1), padding: tuple[int, int] | None = None) -> nn.Conv2d:
    """Conv2d over (freq, time) with explicit symmetric padding (onnxruntime-web needs no 'same')."""
    if padding is None:
        padding = (dilation[0] * (kernel[0] - 1) // 2, dilation[1] * (kernel[1] - 1) // 2)
    return nn.Conv2d(cin, cout, kernel, stride=stride, dilation=dilation, padding=padding)


def conv2_freq_padding(freq_stride: int) -> int:
    """Padding of conv2's 25-tap frequency kernel (dilation 3). Stride 1: 36, output bin i centred on
    input bin i. Stride 3 (semitone neck): 35, so output j is centred on input bin 3j + 1, the bin of
    MIDI pitch 24 + j, and the output has 84 rows (one per pitch), the same taps as at stride 1."""
    if freq_stride not in (1, C.BINS_PER_SEMITONE):
        raise ValueError(f"conv2 frequency stride must be 1 or {C.BINS_PER_SEMITONE}, got {freq_stride}")
    return 36 if freq_stride == 1 else 36 - C.BINS_PER_SEMITONE // 2


class LowRankConv(nn.Module):
    """The note branch's 16 -> 8, 25 x 3 (dilation 3 in frequency) convolution as a rank-``rank``
    product: a frequency-only convolution 16 -> rank (25 x 1, dilated) then a time-only one rank -> 8
    (1 x 3), or with ``time_first`` the time-only one 16 -> rank then the frequency-only one rank -> 8.
    Freq first, rank 24 represents every full kernel; rank 8 costs 3,392 multiply-adds per (bin, frame)
    (1,984 time first) instead of 9,600. Why: the full convolution was 48% of BasicAMT's
    onnxruntime time. Why time first: onnxruntime's blocked layout pads channels to 16, so the 25-tap
    convolution costs about its input channels x 16; time first it reads ``rank`` channels, not 16."""

    def __init__(self, rank: int, freq_stride: int = 1, out_channels: int = 8, time_first: bool = False) -> None:
        super().__init__()
        if not 1 <= rank <= 24:
            raise ValueError(f"conv2 rank must be 1..24, got {rank}")
        self.rank = rank
        self.time_first = time_first
        freq_in, freq_out = (rank, out_channels) if time_first else (16, rank)
        self.freq = nn.Conv2d(freq_in, freq_out, (25, 1), stride=(freq_stride, 1), dilation=(3, 1),
                              padding=(conv2_freq_padding(freq_stride), 0), bias=time_first)
        self.time = nn.Conv2d(16, rank, (1, 3), padding=(0, 1), bias=False) if time_first else \
            nn.Conv2d(rank, out_channels, (1, 3), padding=(0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.freq(self.time(x)) if self.time_first else self.time(self.freq(x))

    @torch.no_grad()
    def kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The full convolution this product equals: weight (out, 16, 25, 3) and bias (out,)."""
        freq, time = self.freq.weight[..., 0].double(), self.time.weight[:, :, 0].double()
        if self.time_first:     # freq (out, r, 25), time (r, 16, 3)
            return torch.einsum("orf,rct->ocft", freq, time).float(), self.freq.bias.detach().clone()
        # time (out, r, 3), freq (r, 16, 25)
        return torch.einsum("ort,rcf->ocft", time, freq).float(), self.time.bias.detach().clone()

    @torch.no_grad()
    def init_from_kernel(self, weight: torch.Tensor, bias: torch.Tensor) -> float:
        """Set both factors from a full (8, 16, 25, 3) kernel by truncated SVD (the best rank-r
        approximation in the least-squares sense); returns the share of the kernel's energy kept."""
        out = (self.freq if self.time_first else self.time).out_channels
        if out != 8 or weight.shape != (8, 16, 25, 3):
            raise ValueError("a conv2 kernel (8, 16, 25, 3) initialises an 8-output product")
        w, r = weight.detach().double(), self.rank
        if self.time_first:     # rows (out, freq), cols (in, time)
            u, s, vt = torch.linalg.svd(w.permute(0, 2, 1, 3).reshape(8 * 25, 16 * 3), full_matrices=False)
            root = torch.sqrt(s[:r])
            self.freq.weight.copy_((u[:, :r] * root).reshape(8, 25, r).permute(0, 2, 1)[..., None].float())
            self.time.weight.copy_((root[:, None] * vt[:r]).reshape(r, 16, 1, 3).float())
            self.freq.bias.copy_(bias)
        else:                   # rows (out, time), cols (in, freq)
            u, s, vt = torch.linalg.svd(w.permute(0, 3, 1, 2).reshape(8 * 3, 16 * 25), full_matrices=False)
            root = torch.sqrt(s[:r])
            self.freq.weight.copy_((root[:, None] * vt[:r]).reshape(r, 16, 25, 1).float())
            self.time.weight.copy_((u[:, :r] * root).reshape(8, 3, r).permute(0, 2, 1)[:, :, None, :].float())
            self.time.bias.copy_(bias)
        return float((s[:r] ** 2).sum() / (s ** 2).sum())


class NoteBranch(nn.Module):
    """stacked (B, 8, 252, T) -> onset, frame probabilities (B, 84, T).

    conv2_rank: 0 for the paper's full 25 x 3 dilated convolution, else a LowRankConv of that rank
    (conv2_time_first: its time convolution first).
    conv_kernel: side of the square kernels of conv1 and the neck, 5 (the paper's) or 3. Why 3: in
    onnxruntime's blocked layout these 8 -> 16 convolutions cost about their kernel area; 3 x 3 makes the
    note branch ~17% faster and a whole window ~10% (measured, 2 threads), for a little accuracy (model card).
    neck_kernel: the neck's side alone (None: conv_kernel). Why apart: conv1 reads the stacked input in
    plain layout, where onnxruntime gained little from a 3 x 3 kernel; the neck's 3 x 3 saved most of it
    (random weights, one window: neck alone 3 x 3 0.92 x, conv1 alone 0.98 x, both 0.86 x).
    neck_bins: rows of everything after conv2: 252 (the paper's: three bins per semitone down to the
    heads, which stride 3 to pitches) or 84, one row per pitch, the three bins of a semitone as three
    groups of channels ("phases"): conv2 strides 3 (its taps centred on each semitone's centre bin
    3j + 1, computed for a third of the rows) and gives 8 channels per phase; the residual is the stacked
    input's bins 3j, 3j + 1, 3j + 2 as 24 channels; the neck (24 -> 16, 3 rows) reaches the same bins as
    the paper's 5 x 5 one does from the centre bin; the heads work on pitches with 3-row kernels. Why 84:
    onnxruntime's time is in the convolutions after conv1, about in proportion to the rows they compute
    (model card: accuracy and speed)."""

    def __init__(self, conv2_rank: int = 0, conv_kernel: int = 5, neck_bins: int = C.STACKED_BINS,
                 conv2_time_first: bool = False, neck_kernel: int | None = None) -> None:
        super().__init__()
        if conv2_time_first and not conv2_rank:
            raise ValueError("conv2_time_first needs a low-rank conv2 (conv2_rank >= 1)")
        if conv_kernel not in (3, 5):
            raise ValueError(f"conv_kernel must be 3 or 5, got {conv_kernel}")
        neck_kernel = conv_kernel if neck_kernel is None else neck_kernel
        if neck_kernel not in (3, 5):
            raise ValueError(f"neck_kernel must be 3 or 5, got {neck_kernel}")
        if neck_bins not in C.NECK_BINS:
            raise ValueError(f"neck_bins must be one of {C.NECK_BINS}, got {neck_bins}")
        self.conv2_rank = conv2_rank
        self.conv_kernel = conv_kernel
        self.neck_kernel = neck_kernel
        self.neck_bins = neck_bins
        self.conv2_time_first = conv2_time_first
        pitch_neck = neck_bins == C.N_PITCHES
        # conv2 strides from bins to pitches when the neck is at pitches (else the heads do), and then
        # gives 8 channels for each of a semitone's bins
        self.phases = C.BINS_PER_SEMITONE if pitch_neck else 1
        neck_in = 8 * self.phases
        self.conv1 = nn.Sequential(conv(8, 16, (conv_kernel, conv_kernel)), nn.BatchNorm2d(16), nn.LeakyReLU(0.1))
        if conv2_rank:
            conv2 = LowRankConv(conv2_rank, self.phases, neck_in, conv2_time_first)
        else:
            conv2 = conv(16, neck_in, (25, 3), stride=(self.phases, 1), dilation=(3, 1),
                         padding=(conv2_freq_padding(self.phases), 1))
        self.conv2 = nn.Sequential(conv2, nn.BatchNorm2d(neck_in))
        if pitch_neck:
            self.neck = nn.Sequential(conv(neck_in, 16, (3, neck_kernel)), nn.BatchNorm2d(16), nn.ReLU())
            self.frame_head = conv(16, 1, (3, 5))
            self.onset_head = nn.Sequential(conv(16, 7, (3, 3)), nn.BatchNorm2d(7), nn.ReLU())
        else:
            self.neck = nn.Sequential(conv(8, 16, (neck_kernel, neck_kernel)), nn.BatchNorm2d(16), nn.ReLU())
            self.frame_head = conv(16, 1, (5, 5), stride=(3, 1), padding=(1, 2))
            self.onset_head = nn.Sequential(conv(16, 7, (7, 3), stride=(3, 1), padding=(2, 1)),
                                            nn.BatchNorm2d(7), nn.ReLU())
        self.onset_out = conv(8, 1, (3, 5))
        self.fused_heads: nn.Conv2d | None = None      # inference only, see fuse_heads()

    @torch.no_grad()
    def fuse_heads(self) -> None:
        """For inference (export): merge the onset head (BatchNorm folded in) and the frame head into
        one 16 -> 8 convolution (kernel: the larger of the two in each axis, same stride): channels 0-6
        the onset features before their ReLU, channel 7 the frame logits. The same sums up to float
        rounding (each head's kernel sits zero-padded in the larger one, centred on the same input rows
        and frames). Why: in onnxruntime's profile of one window the 1-channel frame head took 9% of
        BasicAMT's time, more than twice the 7-channel onset head with 6x its operations (its blocked
        layout pads outputs to 8 channels). Training code never calls this."""
        if self.training:
            raise RuntimeError("fuse_heads() is for inference: call .eval() first")
        onset, bn, frame = self.onset_head[0], self.onset_head[1], self.frame_head
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        onset_w = onset.weight * scale[:, None, None, None]
        onset_b = (onset.bias - bn.running_mean) * scale + bn.bias
        kernel = tuple(max(a, b) for a, b in zip(onset.kernel_size, frame.kernel_size))
        padding = tuple(max(a, b) for a, b in zip(onset.padding, frame.padding))
        fused = nn.Conv2d(16, 8, kernel, stride=onset.stride, padding=padding)
        fused.weight.zero_()
        for channels, head, w in ((slice(0, 7), onset, onset_w), (slice(7, 8), frame, frame.weight)):
            # a head with less padding starts that many rows / frames further into the fused kernel
            r0, c0 = padding[0] - head.padding[0], padding[1] - head.padding[1]
            fused.weight[channels, :, r0:r0 + head.kernel_size[0], c0:c0 + head.kernel_size[1]] = w
        fused.bias[:7] = onset_b
        fused.bias[7] = frame.bias[0]
        fused.requires_grad_(False)
        self.fused_heads = fused

    def forward_logits(self, stacked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the residual at the neck's rows: every bin, or per pitch its three bins as channel groups
        p = self.phases
        skip = stacked if p == 1 else torch.cat([stacked[:, :, phase::p] for phase in range(p)], dim=1)
        x = F.relu(self.conv2(self.conv1(stacked)) + skip)
        x = self.neck(x)
        if self.fused_heads is not None:
            heads = self.fused_heads(x)
            frame_logits, onset_feat = heads[:, 7:8], F.relu(heads[:, :7])
        else:
            frame_logits = self.frame_head(x)                          # (B, 1, 84, T)
            onset_feat = self.onset_head(x)                            # (B, 7, 84, T)
        onset_in = torch.cat([onset_feat, torch.sigmoid(frame_logits)], dim=1)
        onset_logits = self.onset_out(onset_in)
        return onset_logits[:, 0], frame_logits[:, 0]


class FrameNorm(nn.Module):
    """Normalise over (channels, freq) of each frame, with a per-channel affine: a layer norm that
    never looks across time (so it is chunk-safe, unlike GroupNorm over the whole map)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2), keepdim=True)
        var = ((x - mean) ** 2).mean(dim=(1, 2), keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5) * self.weight + self.bias


class TimbreEncoder(nn.Module):
    """stacked (B, 8, 252, T) -> embedding (B, 12, 84, T), L2-normalised over channels.

    Timbre changes slowly: the encoder works at a quarter of the frame rate (its first convolution has
    stride 4 in time) and each embedding is repeated over its 4 frames. That cuts its cost ~4x, which
    keeps Septimbre within the speed budget; notes are >= 6 frames, so each has its own embeddings.
    Chunked inference stays exact when windows start at multiples of TIME_STRIDE frames.
    It also has its own feature affine (k, b): the encoder then depends on nothing the note branch
    learns, so both can be trained independently (even at the same time) and combined."""

    TIME_STRIDE = 4

    def __init__(self) -> None:
        super().__init__()
        # the feature scale decides whether the contrastive loss trains at all (measured on a fixed
        # batch, 80 steps: k = 0.1 stays at chance, 6.24 -> 6.20; k = 0.5 -> 5.80; k = 1 -> 5.62; k = 3 -> 5.57)
        self.k = nn.Parameter(torch.tensor(2.0))
        self.b = nn.Parameter(torch.tensor(0.0))
        s = self.TIME_STRIDE
        self.conv1 = conv(8, 16, (5, s + 1), stride=(1, s), padding=(2, s // 2))
        self.norm1 = FrameNorm(16)
        self.conv2 = conv(16, 8, (25, 3), dilation=(3, 1))
        self.norm2 = FrameNorm(8)
        self.conv3 = conv(8, 16, (5, 5))
        self.act3 = nn.PReLU(16)
        self.res_norm = FrameNorm(16)
        self.res1 = conv(16, 24, (3, 3))
        self.res2 = conv(24, 16, (3, 3))
        self.out = conv(16, C.EMBEDDING_DIM, (3, 5), stride=(3, 1), padding=(0, 2))

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        s = self.TIME_STRIDE
        x = F.leaky_relu(self.norm1(self.conv1(stacked)), 0.1)      # (B, 16, 252, ceil(T / s))
        x = self.conv2(x) + stacked[..., ::s]
        x = self.act3(self.conv3(self.norm2(x)))
        x = x + self.res2(F.relu(self.res1(self.res_norm(x))))
        x = x - x.mean(dim=1, keepdim=True)                            # centre each cell's vector
        emb = self.out(x)
        emb = emb / torch.sqrt((emb * emb).sum(dim=1, keepdim=True) + 1e-12)
        return torch.repeat_interleave(emb, s, dim=3)[..., : stacked.shape[-1]]


class BasicAMT(nn.Module):
    """Timbre-agnostic note model (~19k parameters; ~13k with conv2_rank 8, ~9k with 3 x 3 kernels too)."""

    def __init__(self, norm: str = "window", **note_shape) -> None:
        """note_shape: NoteBranch's keywords (conv2_rank, conv_kernel, neck_bins, conv2_time_first,
        neck_kernel)."""
        super().__init__()
        self.front = FrontEnd(norm)
        self.notes = NoteBranch(**note_shape)

    def note_logits(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, 288, T) -> onset, frame logits (B, 84, T), through the note branch's affine."""
        return self.notes.forward_logits(self.front.stack(feat * self.front.k + self.front.b))

    def forward_logits(self, audio: torch.Tensor, crop: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        onset, frame = self.note_logits(crop_frames(self.front.features(audio), crop))
        return {"onset": onset, "frame": frame}

    def forward(self, audio: torch.Tensor, logits: bool = False, crop: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Probabilities (or, with ``logits``, the training logits: going through forward() lets
        DistributedDataParallel synchronise gradients). crop: see crop_frames."""
        out = self.forward_logits(audio, crop)
        if logits:
            return out
        return {"onset": torch.sigmoid(out["onset"]), "frame": torch.sigmoid(out["frame"])}


class Septimbre(BasicAMT):
    """Note branch plus timbre encoder (~45k parameters; ~39k with conv2_rank 8)."""

    def __init__(self, norm: str = "window", **note_shape) -> None:
        super().__init__(norm, **note_shape)
        self.timbre = TimbreEncoder()

    def forward_logits(self, audio: torch.Tensor, crop: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        feat = crop_frames(self.front.features(audio), crop)
        onset, frame = self.note_logits(feat)
        return {"onset": onset, "frame": frame, "embedding": self.embed(feat)}

    def embed(self, feat: torch.Tensor) -> torch.Tensor:
        """Features (B, 288, T) -> embedding (B, 12, 84, T), through the encoder's own affine."""
        return self.timbre(self.front.stack(feat * self.timbre.k + self.timbre.b))

    def forward(self, audio: torch.Tensor, logits: bool = False, embedding_only: bool = False,
                crop: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """embedding_only: skip the note branch (training the timbre encoder, whose loss needs only
        the embedding: ~2x fewer operations per step). crop: see crop_frames (start a multiple of
        the encoder's TIME_STRIDE, else its 4-frame grid moves)."""
        if embedding_only:
            return {"embedding": self.embed(crop_frames(self.front.features(audio), crop))}
        out = self.forward_logits(audio, crop)
        if logits:
            return out
        out["onset"] = torch.sigmoid(out["onset"])
        out["frame"] = torch.sigmoid(out["frame"])
        return out


MODELS = {"basicamt": BasicAMT, "septimbre": Septimbre}


def build_model(name: str, norm: str = "window", **note_shape) -> BasicAMT:
    """Make an untrained model by name ('basicamt' or 'septimbre'); note_shape: the note branch's
    keywords (conv2_rank, conv_kernel, neck_bins, conv2_time_first, neck_kernel), see NoteBranch."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](norm, **note_shape)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
