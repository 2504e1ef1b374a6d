"""Sharded training on 2 CPU processes (gloo) gives the single-process result.

Both runs start from the same backbone (``--init``), see the same global batches
(``BucketSampler`` splits them over ranks) and normalise the loss by the global target
count, so losses and the consolidated weights agree to float32 rounding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aqaa.lm_data import write_synthetic_tokens
from aqaa.model import LM, load_model, save_model
from aqaa.stages import backbone_config
from aqaa.config import load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    tokens = write_synthetic_tokens(root / "tokens", n_train=16, n_val=4, n_test=2, n_linguistic=64, n_semantic=128)
    torch.manual_seed(0)
    init = root / "init"
    save_model(LM(backbone_config(load_config("tiny"))), init)  # any backbone artifact can seed SFT
    return root, tokens, init


def _sft1(root: Path, tokens: Path, init: Path, name: str, *overrides: str) -> Path:
    cmd = [sys.executable, "-m", "aqaa.cli", "train", "sft1", "-e", "tiny", "--tokens", str(tokens), "--init",
           str(init), "--quiet", f"paths.checkpoints={root / name}", f"paths.runs={root / 'runs'}",
           "train.precision=32-true", "train.sft1.max_steps=3", "train.sft1.val_every=3", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return Path(json.loads((root / name / "latest.json").read_text())["sft1"])


def _compare(single: Path, sharded: Path) -> None:
    a = json.loads((single / "metrics.json").read_text())
    b = json.loads((sharded / "metrics.json").read_text())
    assert b["world_size"] == 2 and a["world_size"] == 1
    assert b["train_loss_history"] == pytest.approx(a["train_loss_history"], rel=1e-4)
    assert b["val"]["loss"] == pytest.approx(a["val"]["loss"], rel=1e-4)
    m1, m2 = load_model(single), load_model(sharded)  # the consolidated checkpoint loads into a plain model
    for (k, p1), (_, p2) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.allclose(p1, p2, atol=1e-5), k


def test_fsdp2_two_processes_match_one(setup):
    root, tokens, init = setup
    single = _sft1(root, tokens, init, "one")
    sharded = _sft1(root, tokens, init, "fsdp2", "train.strategy=fsdp2", "train.devices=2")
    _compare(single, sharded)


@pytest.mark.slow
def test_ddp_two_processes_match_one(setup):
    root, tokens, init = setup
    single = _sft1(root, tokens, init, "one-ddp")
    _compare(single, _sft1(root, tokens, init, "ddp", "train.strategy=ddp", "train.devices=2"))


@pytest.mark.slow
def test_fsdp2_activation_checkpointing_matches(setup):
    root, tokens, init = setup
    single = _sft1(root, tokens, init, "one-ac")
    _compare(single, _sft1(root, tokens, init, "fsdp2-ac", "train.strategy=fsdp2", "train.devices=2",
                           "train.activation_checkpointing=true"))
