"""Backbone stages through the real entry points (``aqaa train pretrain|sft1|sft2``), on a
synthetic tokens artifact and the tiny experiment: artifacts, chaining, metrics, resume
after a kill, stopping on a NaN loss, strategy errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from aqaa.artifacts import ArtifactStore
from aqaa.cli import main
from aqaa.config import load_config
from aqaa.lm_data import write_synthetic_tokens
from aqaa.model import load_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The tiny models here gain nothing from a second intra-op thread, and on a shared
    # 2-core machine it stalls on synchronisation (as in the subprocesses: OMP_NUM_THREADS=1).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    return write_synthetic_tokens(tmp_path_factory.mktemp("tokens"), n_train=24, n_val=6, n_test=6,
                                  n_linguistic=64, n_semantic=128)


def _paths(root: Path) -> list[str]:
    return [f"paths.checkpoints={root / 'ckpt'}", f"paths.runs={root / 'runs'}"]


def test_pretrain_sft1_sft2_chain(tokens, tmp_path, capsys):
    args = ["-e", "tiny", "--tokens", str(tokens), "--quiet", *_paths(tmp_path)]
    assert main(["train", "sft2", *args]) == 0  # builds pretrain and sft1 on the way
    out = capsys.readouterr().out
    assert "sft2 artifact:" in out and "val (before -> after)" in out
    latest = json.loads((tmp_path / "ckpt" / "latest.json").read_text())
    arts = {s: Path(latest[s]) for s in ("pretrain", "sft1", "sft2")}
    for stage, d in arts.items():
        info = json.loads((d / "artifact.json").read_text())
        assert info["stage"] == stage
        m = json.loads((d / "metrics.json").read_text())
        assert m["steps"] == len(m["train_loss_history"]) > 0
        for k in ("loss", "ppl_text", "ppl_audio", "ppl_linguistic", "ppl_semantic"):
            assert k in m["val"] and k in m["val_before"]
        assert m["tokens_per_s"] > 0
        sd = torch.load(d / "model.pt", weights_only=True)  # a plain state dict
        assert all(isinstance(v, torch.Tensor) for v in sd.values())
        load_model(d)  # + model_config.json
        assert not (d / "lightning").exists()  # resumable checkpoints are dropped once complete
    # the chain: pretrain feeds sft1, sft1 feeds sft2
    assert json.loads((arts["sft1"] / "artifact.json").read_text())["upstream"]["init"] == str(arts["pretrain"])
    assert json.loads((arts["sft2"] / "artifact.json").read_text())["upstream"]["init"] == str(arts["sft1"])
    pm = json.loads((arts["pretrain"] / "metrics.json").read_text())
    assert pm["val"]["loss"] < pm["val_before"]["loss"]  # it learns something in 4 steps
    assert set(pm["data"]["train"]["kinds"]) == {"asr", "tts", "interleave"}
    s1 = json.loads((arts["sft1"] / "metrics.json").read_text())["data"]["train"]["kinds"]
    assert s1["aqta"] == 24 and s1["aqtaa"] == 24  # phase 1 mixes both
    s2 = json.loads((arts["sft2"] / "metrics.json").read_text())["data"]["train"]["kinds"]
    assert s2 == {"aqtaa": 12}  # phase 2: voice_control, multi_state, role_play only
    # the output layout is part of the artifact
    assert json.loads((arts["sft1"] / "artifact.json").read_text())["spec"]["layout"]["layout"] == "interleaved"
    # a trained backbone answers in its layout (constrained decoding), from the artifact alone
    from aqaa.generate import generate, load_backbone

    model, vocab, kw = load_backbone(arts["sft2"])
    assert kw == {"layout": "interleaved", "ratio": (10, 15), "splice": "marker_preserving", "streams": "dual"}
    r = generate(model, vocab, vocab.prompt(vocab.interleave_audio(list(range(8)), list(range(12)))),
                 max_new_tokens=60, seed=0, **kw)
    assert r.finished and not r.parse.errors
    # TensorBoard logs under paths.runs
    assert list((tmp_path / "runs" / "sft1").rglob("events.out.tfevents.*"))
    # a second run reuses everything
    assert main(["train", "sft2", *args]) == 0
    assert "sft2: reusing" in capsys.readouterr().out


def test_layout_change_reuses_pretrain(tokens, tmp_path):
    args = ["-e", "tiny", "--tokens", str(tokens), "--quiet", *_paths(tmp_path)]
    assert main(["train", "sft1", *args, "layout.layout=text_first"]) == 0
    assert main(["train", "sft1", *args, "layout.layout=audio_only", "train.sft1.max_steps=2"]) == 0
    arts = sorted(p.name for p in (tmp_path / "ckpt").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert sum(a.startswith("pretrain-") for a in arts) == 1 and sum(a.startswith("sft1-") for a in arts) == 2


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "aqaa.cli", *args]


def test_killed_run_resumes(tokens, tmp_path):
    cmd = _cli("train", "pretrain", "-e", "tiny", "--tokens", str(tokens), "--quiet", *_paths(tmp_path),
               "train.pretrain.max_steps=12", "train.pretrain.val_every=12", "train.ckpt_every=3")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    partial = tmp_path / "ckpt" / ".partial"
    deadline = time.time() + 240
    ckpt = None
    while time.time() < deadline and proc.poll() is None:
        found = list(partial.glob("pretrain-*/lightning/last.ckpt"))
        if found and found[0].stat().st_size > 0:
            ckpt = found[0]
            size = ckpt.stat().st_size
            time.sleep(1.0)  # not mid-write
            if ckpt.stat().st_size == size:
                break
        time.sleep(0.2)
    assert ckpt is not None and proc.poll() is None, "the run ended before a checkpoint could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]
    assert 0 < first < 12
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resuming from" in res.stdout + res.stderr
    art = Path(json.loads((tmp_path / "ckpt" / "latest.json").read_text())["pretrain"])
    m = json.loads((art / "metrics.json").read_text())
    assert m["steps"] == 12 and len(m["train_loss_history"]) == 12  # history kept across the restart
    assert not list(partial.glob("pretrain-*"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tokens, tmp_path):
    from lightning.pytorch.callbacks import Callback

    from aqaa.stages import run_pretrain
    from lightning_modules.lm import TrainingDiverged

    class Poison(Callback):  # corrupt a weight after the step-2 checkpoint
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 3:
                with torch.no_grad():
                    pl_module.model.norm.weight.fill_(float("nan"))

    cfg = load_config("tiny", [*_paths(tmp_path), "train.pretrain.max_steps=6", "train.pretrain.val_every=6"])
    with pytest.raises(TrainingDiverged, match="last good checkpoint is kept"):
        run_pretrain(cfg, tokens=tokens, progress=False, callbacks=[Poison()], log=lambda *a: None)
    store = ArtifactStore(cfg.paths.checkpoints)
    partial = list((Path(cfg.paths.checkpoints) / ".partial").glob("pretrain-*"))
    assert len(partial) == 1
    last = partial[0] / "lightning" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 2
    assert not any(p.name.startswith("pretrain-") for p in store.root.iterdir())  # nothing looks complete
    art = run_pretrain(cfg, tokens=tokens, progress=False, log=lambda *a: None)  # rerun: resumes, finishes
    assert art.complete and json.loads((art.path / "metrics.json").read_text())["steps"] == 6


def test_strategy_errors_name_the_key(tokens, tmp_path, capsys):
    base = ["train", "sft1", "-e", "tiny", "--tokens", str(tokens), *_paths(tmp_path)]
    assert main([*base, "train.strategy=fsdp", "train.accelerator=cpu"]) == 2
    assert "key 'train.strategy'" in capsys.readouterr().err
    if not torch.cuda.is_available():  # auto accelerator, no GPU: refused before any work
        assert main([*base, "train.strategy=fsdp"]) == 2
        err = capsys.readouterr().err
        assert "key 'train.strategy'" in err and "fsdp2" in err
    assert main([*base, "train.devices=2"]) == 2
    assert "key 'train.strategy'" in capsys.readouterr().err
    assert not (tmp_path / "ckpt").exists()
