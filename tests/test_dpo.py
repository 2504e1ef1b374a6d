"""DPO and merge stages through their real runners, on a synthetic tokens artifact."""

import json

import pytest
import torch

from aqaa.config import load_config
from aqaa.generate import generate
from aqaa.lm_data import write_synthetic_tokens
from aqaa.losses import dpo_loss, sequence_logps
from aqaa.model import LM, load_model, preset, save_model
from aqaa.preference import collate_pairs, load_preference_examples
from aqaa.stages import run_dpo, run_merge
from aqaa.tokens import Vocab

NL, NS = 64, 128


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Synthetic tokens with preference pairs (rejected = another dialogue's answer), and a
    small random 'sft1' backbone to start from."""
    root = tmp_path_factory.mktemp("dpo")
    tokens = write_synthetic_tokens(root / "tokens", n_train=8, n_val=4, n_test=2, n_linguistic=NL, n_semantic=NS)
    for split in ("train", "val"):
        data = torch.load(tokens / f"{split}.pt", weights_only=True)
        rows = data["dialogues"]
        pairs = [{"id": f"{d['id']}-pair", "item_id": d["id"], "kind": "wrong_answer", "chosen_audio": d["answer"],
                  "rejected_audio": rows[(k + 1) % len(rows)]["answer"], "chosen": d["segments"],
                  "rejected": rows[(k + 1) % len(rows)]["segments"]} for k, d in enumerate(rows)]
        torch.save({**{k: v for k, v in data.items() if k != "dialogues"}, "pairs": pairs}, tokens / f"pairs_{split}.pt")
    vocab = Vocab(256, NL, NS)
    cfg = preset("tiny", vocab_size=vocab.size, n_layer=2, d_model=64, n_head=2, n_kv_head=1, d_ff=128, max_seq_len=1024)
    torch.manual_seed(0)
    init = root / "sft1"
    save_model(LM(cfg), init, extra={"stage": "sft1"})
    return root, tokens, init, vocab


def _cfg(root, *extra):
    return load_config("tiny", [f"paths.checkpoints={root / 'ck'}", f"paths.runs={root / 'runs'}",
                                "train.precision=32-true", "layout.layout=text_first", *extra])


def test_masked_batch_excludes_exactly_the_audio_ids(setup):
    root, tokens, _, vocab = setup
    ex, dropped = load_preference_examples(_cfg(root), tokens, "train", vocab)
    assert len(ex) == 8 and dropped == 0
    b = collate_pairs(ex[:3], vocab)
    lab = b["labels"]
    is_audio = (lab >= vocab.audio_offset) & (lab < vocab.size)
    assert b["unmasked"].sum() == sum(len(e.chosen) + len(e.rejected) for e in ex[:3])  # response + eos
    assert torch.equal(b["masked"], b["unmasked"] & ~is_audio)
    assert is_audio[b["unmasked"]].any() and not is_audio[b["masked"]].any()


def test_dpo_moves_chosen_above_rejected(setup):
    root, tokens, init, _ = setup
    cfg = _cfg(root, "train.dpo.max_steps=25", "train.dpo.lr=2e-3", "train.dpo.batch_pairs=8", "train.dpo.beta=0.5",
               "train.dpo.val_every=25", "train.dpo.warmup_steps=2")
    art = run_dpo(cfg, tokens=tokens, init=init, progress=False, log=lambda *_: None)
    m = json.loads((art.path / "metrics.json").read_text())
    assert m["masked"] is True and m["steps"] == 25
    # on the (overfit) training pairs the chosen answers end up preferred: the implicit
    # rewards beta * log(pi / pi_ref) of chosen answers rise above those of rejected ones
    assert m["train_loss_final"] < 0.5 * m["train_loss_history"][0]
    vocab = setup[3]
    ex, _ = load_preference_examples(cfg, tokens, "train", vocab)
    b = collate_pairs(ex, vocab)
    with torch.no_grad():
        pol = sequence_logps(load_model(art.path)(b["input_ids"]), b["labels"], b["masked"])
        ref = sequence_logps(load_model(init)(b["input_ids"]), b["labels"], b["masked"])
    _, chosen, rejected = dpo_loss(pol[:8], pol[8:], ref[:8], ref[8:], beta=0.5)
    assert (chosen > rejected).float().mean() >= 0.75 and (chosen - rejected).mean() > 0
    assert json.loads((root / "ck" / "latest.json").read_text())["dpo"] == str(art.path)
    # rerun: reused, nothing trained
    assert run_dpo(cfg, tokens=tokens, init=init, progress=False, log=lambda *_: None).path == art.path


def test_merge_weights_and_merged_artifact_generates(setup):
    root, tokens, init, vocab = setup
    cfg = _cfg(root, "train.dpo.max_steps=3", "train.dpo.val_every=3", "train.dpo.lr=1e-2")
    dpo = run_dpo(cfg, tokens=tokens, init=init, progress=False, log=lambda *_: None)
    a, b = load_model(init).state_dict(), load_model(dpo.path).state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    first = run_merge(cfg, artifacts=[init, dpo.path], weights=[1, 0], log=lambda *_: None)
    merged = load_model(first.path)
    assert all(torch.equal(merged.state_dict()[k], a[k]) for k in a)
    assert merged.lm_head.weight is merged.embed.weight  # tied weights stay tied
    same = run_merge(cfg, artifacts=[init, init, init], weights=[5, 5, 1], log=lambda *_: None)
    assert all(torch.equal(load_model(same.path).state_dict()[k], a[k]) for k in a)
    half = load_model(run_merge(cfg, artifacts=[init, dpo.path], weights=[1, 1], log=lambda *_: None).path)
    torch.testing.assert_close(half.state_dict()["norm.weight"], (a["norm.weight"] + b["norm.weight"]) / 2)
    q = vocab.interleave_audio([1, 2, 3, 4], [5, 6, 7, 8, 9, 10])
    out = generate(merged, vocab, vocab.prompt(q), layout="text_first", ratio=None, max_new_tokens=40, seed=0)
    assert out.parse.errors == [] and out.ids


def test_merge_rejects_other_shapes(setup, tmp_path):
    root, _, init, vocab = setup
    other = tmp_path / "other"
    save_model(LM(preset("tiny", vocab_size=vocab.size, n_layer=1, d_model=64, n_head=2, n_kv_head=1, d_ff=128)), other)
    with pytest.raises(ValueError, match="another model shape"):
        run_merge(_cfg(root), artifacts=[init, other], weights=[1, 1], log=lambda *_: None)
