"""The dual-codebook audio tokenizer through its real entry points, on the tiny corpus.

Frame counts at any input rate, deterministic encoding, the cached tokens artifact,
resuming an interrupted training run, and a NaN loss stopping with the last good
checkpoint kept.
"""

import json
import math

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from aqaa.artifacts import ArtifactStore
from aqaa.cli import main
from aqaa.config import ConfigError, load_config
from aqaa.stages import run_tokenizer
from aqaa.tokenizer import AudioTokenizer, audio_ids, load_tokens
from aqaa.tokenizer.text import cer, greedy_decode, normalize_text
from aqaa.tokens import Vocab
from lightning_modules.tokenizer import CKPT_DIR, TrainingDiverged


def _overrides(root):
    return [f"paths.checkpoints={root / 'checkpoints'}", f"paths.runs={root / 'runs'}"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("tok")


@pytest.fixture(scope="module")
def corpus(root):
    assert main(["data", "build", "-e", "tiny", "--quiet", *_overrides(root)]) == 0
    return ArtifactStore(root / "checkpoints").latest("corpus")


@pytest.fixture(scope="module")
def tokenizer_dir(root, corpus):
    assert main(["train", "tokenizer", "-e", "tiny", "--quiet", *_overrides(root)]) == 0
    return ArtifactStore(root / "checkpoints").latest("tokenizer")


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return AudioTokenizer.load(tokenizer_dir)


def _speechlike(seconds: float, sr: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(round(seconds * sr))) / sr
    f0 = 120 + 30 * torch.sin(2 * math.pi * 0.7 * t)
    wav = 0.3 * torch.sin(2 * math.pi * torch.cumsum(f0, 0) / sr) * (0.6 + 0.4 * torch.sin(2 * math.pi * 3 * t))
    return wav + 0.01 * torch.randn(len(t), generator=g)


@pytest.mark.parametrize("sr", [16000, 22050, 24000])
@pytest.mark.parametrize("seconds", [1.0, 2.5, 3.7])
def test_codes_per_second_at_any_rate(tok, sr, seconds):
    ling, sem = tok.encode(_speechlike(seconds, sr), sr)
    assert abs(len(ling) - 50 / 3 * seconds) <= 1, (len(ling), seconds)
    assert abs(len(sem) - 25 * seconds) <= 1, (len(sem), seconds)
    assert all(0 <= c < tok.n_linguistic for c in ling) and all(0 <= s < tok.n_semantic for s in sem)


def test_encoding_is_deterministic_and_batch_invariant(tok, tokenizer_dir):
    waves = [_speechlike(s, 16000, seed=k) for k, s in enumerate([0.8, 2.0, 3.1, 1.3])]
    one_by_one = [tok.encode(w, 16000) for w in waves]
    assert one_by_one == [tok.encode(w, 16000) for w in waves]
    assert tok.encode_batch(waves, 16000, batch_size=4) == one_by_one
    assert AudioTokenizer.load(tokenizer_dir).encode(waves[1], 16000) == one_by_one[1]
    assert tok.encode(torch.zeros(0), 16000) == ([], [])
    assert isinstance(tok.transcribe(waves[0], 16000), str)


def test_artifact_layout(tokenizer_dir):
    meta = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    assert meta["linguistic"]["hop"] == 960 and meta["semantic"]["hop"] == 640
    for name in ("linguistic.pt", "semantic.pt"):
        sd = torch.load(tokenizer_dir / name, weights_only=True)
        assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())
    m = json.loads((tokenizer_dir / "metrics.json").read_text())
    for book in ("linguistic", "semantic"):
        st = m["test"][book]
        assert 0 < st["usage"] <= 1 and 1 <= st["perplexity"] <= st["n_codes"]
    assert not (tokenizer_dir / CKPT_DIR).exists()  # resume checkpoints are not part of the artifact


def test_tensorboard_scalars(root, tokenizer_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(root / "runs" / "tokenizer" / tokenizer_dir.name))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    for tag in ("train/ctc_ling", "train/ctc_sem", "train/recon", "train/sem_usage", "train/sem_perplexity",
                "val/cer_ling", "val/cer_sem", "codebook/linguistic_usage_test", "codebook/semantic_perplexity_test"):
        assert tag in tags, f"{tag} not in {sorted(tags)}"


def test_tokens_cache_is_built_once_and_reused(root, corpus, tokenizer_dir, capsys):
    assert main(["data", "tokenize", "-e", "tiny", "--quiet", *_overrides(root)]) == 0
    tokens = ArtifactStore(root / "checkpoints").latest("tokens")
    files = sorted(tokens.glob("*.pt"))
    stamps = [f.stat().st_mtime_ns for f in files]
    capsys.readouterr()
    assert main(["data", "tokenize", "-e", "tiny", "--quiet", *_overrides(root)]) == 0
    out = capsys.readouterr().out
    assert "tokens: reusing" in out and "tokens: tokenizing" not in out
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert {f.name for f in files} >= {"train.pt", "val.pt", "test.pt", "pairs_train.pt", "pairs_val.pt"}

    train = load_tokens(tokens, "train")
    d = train["dialogues"][0]
    q = d["query"]
    assert isinstance(q["ling"][0], int) and abs(len(q["sem"]) - 1.5 * len(q["ling"])) <= 2
    assert d["answer"] is not None and d["segments"][0]["codes"] is not None
    pairs = load_tokens(tokens, "train", pairs=True)["pairs"]
    assert pairs and pairs[0]["rejected_audio"]["sem"]
    vocab = Vocab(256, train["n_linguistic"], train["n_semantic"])
    assert audio_ids(vocab, q["ling"], q["sem"], "dual") == vocab.interleave_audio(q["ling"], q["sem"])


def test_audio_ids_streams():
    vocab = Vocab(256, n_linguistic=8, n_semantic=16)
    ling, sem = [1, 2, 3, 4], [5, 6, 7, 8, 9, 10]
    dual = audio_ids(vocab, ling, sem, "dual")
    assert len(dual) == 10 and vocab.split_audio(dual) == (ling, sem)
    assert audio_ids(vocab, ling, sem, "linguistic") == [vocab.audio_offset + c for c in ling]
    assert audio_ids(vocab, ling, sem, "semantic") == [vocab.semantic_range.start + s for s in sem]
    assert vocab.split_audio(audio_ids(vocab, ling, sem, "semantic")) == ([], sem)
    with pytest.raises(ValueError, match="tokenizer.streams"):
        audio_ids(vocab, ling, sem, "both")


@pytest.mark.parametrize("override, key", [("tokenizer.streams=both", "tokenizer.streams"),
                                           ("tokenizer.n_heads=5", "tokenizer.d_model"),
                                           ("tokenizer.vq_decay=1.5", "tokenizer.vq_decay"),
                                           ("tokenizer.max_stepz=3", "tokenizer.max_stepz")])
def test_bad_tokenizer_config_names_the_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config("tiny", [override])


def test_text_and_greedy_ctc():
    assert normalize_text("Fish is spelled f-i-s-h. It's 42!") == "fish is spelled f i s h it's 42"
    logits = torch.full((1, 6, 40), -10.0)
    for t, c in enumerate([9, 9, 0, 9, 1, 2]):  # g g (merged), blank, g, space, apostrophe
        logits[0, t, c] = 0
    assert greedy_decode(logits, torch.tensor([6])) == ["gg '"]
    assert cer(["abc"], ["abd"]) == pytest.approx(1 / 3)


# ----- training robustness: resume and NaN ------------------------------------------


class _Killed(Exception):
    pass


class _KillAt(Callback):
    """Simulates a kill: raise after ``step`` optimizer steps (not KeyboardInterrupt, on which
    Lightning ignores SIGINT for the rest of the process and calls sys.exit)."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.step:
            raise _Killed("simulated kill")


class _StartStep(Callback):
    def __init__(self):
        self.start = None

    def on_train_start(self, trainer, *args):
        self.start = trainer.global_step


class _PoisonAt(Callback):
    """Turns a weight into NaN after ``step`` steps, so the next loss is NaN."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, *args):
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.ling.ctc_head.weight.fill_(float("nan"))


def _small_cfg(root, *extra):
    return load_config("tiny", [*_overrides(root), "tokenizer.ckpt_every=4", "tokenizer.val_every=100", *extra])


def test_interrupted_training_resumes_from_its_checkpoint(tmp_path, corpus):
    cfg = _small_cfg(tmp_path, "tokenizer.max_steps=10")
    store = ArtifactStore(cfg.paths.checkpoints)
    with pytest.raises(_Killed):
        run_tokenizer(cfg, corpus=corpus, progress=False, callbacks=[_KillAt(6)], log=lambda *_: None)
    arts = list((tmp_path / "checkpoints" / ".partial").iterdir())
    assert len(arts) == 1 and (arts[0] / CKPT_DIR / "last.ckpt").exists()
    assert not any(p.name.startswith("tokenizer-") for p in (tmp_path / "checkpoints").iterdir())

    start = _StartStep()
    art = run_tokenizer(cfg, corpus=corpus, progress=False, callbacks=[start], log=lambda *_: None)
    assert start.start == 4  # continued from the step-4 checkpoint, not from scratch
    assert art.complete and json.loads((art.path / "tokenizer.json").read_text())["trained_steps"] == 10
    assert store.latest("tokenizer") == art.path


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path, corpus):
    cfg = _small_cfg(tmp_path, "tokenizer.max_steps=20")
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 5.*last good checkpoint") as e:
        run_tokenizer(cfg, corpus=corpus, progress=False, callbacks=[_PoisonAt(5)], log=lambda *_: None)
    assert "tokenizer.lr" in str(e.value)
    (work,) = list((tmp_path / "checkpoints" / ".partial").iterdir())
    ckpt = torch.load(work / CKPT_DIR / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
