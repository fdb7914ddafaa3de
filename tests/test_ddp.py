"""Training at scale runs on torch's own distributed engine: `torchrun --nproc_per_node 2` on the CPU
(gloo backend) trains one short epoch of `timbreamt train` on a tiny generated data set, writes one
checkpoint (rank 0 alone) that loads, and its weights carry rank 1's gradients (they differ from a
single-process run of the same seed, which is itself reproducible)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
BIN = Path(sys.executable).parent


def cli(*args, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = [*(launcher or [sys.executable]), "-m", "timbreamt", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_one_epoch(tmp_path):
    pytest.importorskip("fluidsynth")
    if not (BIN / "torchrun").is_file():
        pytest.skip("torchrun is not installed beside this Python")
    from timbreamt.training.checkpoints import load_checkpoint, model_from_checkpoint

    data = tmp_path / "data"
    r = cli("data", "--hours", 0.006, "--out", data, "--workers", 1, "--quiet")
    assert r.returncode == 0, r.stderr
    common = ["--data", data, "--val", data, "--steps", 2, "--batch", 2, "--segment", 1, "--epochs", 1,
              "--threads", 1, "--quiet"]
    run = tmp_path / "ddp"
    r = cli("train", "basicamt", "--out", run, *common,
            launcher=[str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [rec["epoch"] for rec in log] == [1], log          # rank 0 alone validates and writes
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["epoch"] == 0 and not any(k.startswith("module.") for k in ckpt["model"])   # unwrapped weights
    model = model_from_checkpoint(run / "last.pt")
    assert sum(p.numel() for p in model.parameters()) == ckpt["parameters"]
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())

    # the same seed in one process: reproducible, and different from the two-process run (whose averaged
    # gradients include rank 1's batches), so the processes did train together
    singles = []
    for name in ("one_a", "one_b"):
        r = cli("train", "basicamt", "--out", tmp_path / name, *common)
        assert r.returncode == 0, r.stderr[-3000:]
        singles.append(load_checkpoint(tmp_path / name / "last.pt")["model"])
    weights = [k for k, v in ckpt["model"].items() if v.is_floating_point() and "running" not in k]
    assert all(torch.equal(singles[0][k], singles[1][k]) for k in weights)
    assert any(not torch.allclose(singles[0][k], ckpt["model"][k]) for k in weights)
