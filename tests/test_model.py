"""Backbone, loss masks, layout grammar and constrained generation (no training)."""

from __future__ import annotations

import json
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aqaa.generate import (AUDIO_END, EOS, LING, SEM, TEXT, LayoutGrammar, class_masks, generate, token_class)
from aqaa.lm_data import (IGNORE, BucketSampler, LMBatches, class_sums, perplexities, pretrain_clips,
                          pretrain_examples, sft_examples, token_ce)
from aqaa.model import LM, PRESETS, ModelConfig, count_params, fsdp_memory, load_model, preset, save_model
from aqaa.tokenizer.streams import audio_ids
from aqaa.tokens import SPLICES, Segment, Vocab

VOCAB = Vocab(256, 64, 128)  # the tiny experiment's codebooks
RATIOS = [(10, 15), (3, 5), (6, 50), (1, 5)]
COMBOS = [("text_only", None), ("audio_only", None), ("text_first", None)] + [("interleaved", r) for r in RATIOS]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Decoding a 2-layer toy model is per-op overhead; on a loaded 2-core machine a second
    # intra-op thread only adds synchronisation stalls (5x slower here).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_lm(vocab_size: int = VOCAB.size, seed: int = 0, **kw) -> LM:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab_size, n_layer=2, n_head=2, n_kv_head=1, d_model=32, d_ff=64,
                      max_seq_len=1024, **kw)
    return LM(cfg).eval()


# ----- the model ----------------------------------------------------------------------


def test_presets_are_the_configs_schema():
    from aqaa.config import MODEL_PRESETS

    assert tuple(PRESETS) == MODEL_PRESETS


def test_tiny_preset_size_and_forward():
    cfg = preset("tiny")
    n = count_params(cfg)["total"]
    assert 5e6 <= n <= 10e6, n  # the quick start's ~5-10M
    m = LM(preset("tiny", n_layer=1))
    logits = m(torch.randint(0, cfg.vocab_size, (2, 7)))
    assert logits.shape == (2, 7, cfg.vocab_size) and logits.dtype == torch.float32


def test_paper_preset_counts_on_meta_device():
    cfg = preset("paper")
    c = count_params(cfg)  # builds on the meta device: no memory
    assert 120e9 <= c["total"] <= 140e9
    assert c["total"] == c["embedding"] + c["lm_head"] + c["blocks"] + cfg.d_model  # + final norm
    mem = fsdp_memory(c["total"], 256)
    assert mem["total"] == pytest.approx(c["total"] * 16 / 256)  # 2 + 2 + 8 + 4 bytes per parameter


def test_model_info_cli(capsys):
    from aqaa.cli import main

    assert main(["model", "info", "--preset", "paper", "--gpus", "256", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["gpus"] == 256 and 120e9 <= info["params"]["total"] <= 140e9
    assert 6 * 2**30 < info["per_gpu_bytes"]["total"] < 9 * 2**30


def test_causal_and_kv_cache_match_full_forward():
    m = small_lm()
    x = torch.randint(0, VOCAB.size, (2, 40))
    with torch.no_grad():
        full = m(x)
        # the future never leaks into the past
        assert torch.allclose(m(x[:, :25]), full[:, :25], atol=1e-5)
        m.setup_cache(2, 64)
        steps = [m(x[:, :30], pos=0)[:, -1]] + [m(x[:, t : t + 1], pos=t)[:, -1] for t in range(30, 40)]
        m.clear_cache()
    assert torch.allclose(torch.stack(steps[:-1], 1), full[:, 29:39], atol=1e-4)


def test_logits_at_selected_positions_only():
    m = small_lm()
    x = torch.randint(0, VOCAB.size, (2, 9))
    sel = torch.rand(2, 9) > 0.5
    with torch.no_grad():
        assert torch.allclose(m(x, select=sel), m(x)[sel], atol=1e-6)
    from aqaa.lm_data import target_ce

    labels = torch.where(sel, torch.randint(0, VOCAB.size, (2, 9)), torch.full((2, 9), IGNORE))
    with torch.no_grad():
        assert torch.allclose(target_ce(m, x, labels), token_ce(m(x), labels), atol=1e-5)


def test_gqa_and_tied_embeddings():
    m = small_lm()
    assert m.lm_head.weight is m.embed.weight
    assert m.blocks[0].attn.qkv.out_features == (2 + 2 * 1) * 16
    untied = small_lm(tie_embeddings=False)
    assert untied.num_params() == m.num_params() + VOCAB.size * 32


def test_save_and_load_roundtrip(tmp_path):
    m = small_lm()
    save_model(m, tmp_path)
    sd = torch.load(tmp_path / "model.pt", weights_only=True)  # a plain state dict
    assert "embed.weight" in sd
    m2 = load_model(tmp_path)
    x = torch.randint(0, VOCAB.size, (1, 12))
    assert torch.equal(m(x), m2(x))
    assert m2.lm_head.weight is m2.embed.weight


def test_same_network_as_hf_llama():
    transformers = pytest.importorskip("transformers")
    from aqaa.model import hf_llama_config, to_hf_state_dict

    m = small_lm()
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf_llama_config(m.cfg))).eval()
    hf.load_state_dict(to_hf_state_dict(m), strict=False)
    x = torch.randint(0, VOCAB.size, (2, 20))
    with torch.no_grad():
        assert torch.allclose(m(x), hf(x).logits, atol=1e-4)


# ----- loss masks -----------------------------------------------------------------------


def _dialogue(rng: random.Random, n_segments: int = 1) -> dict:
    def codes(k):
        return {"ling": [rng.randrange(64) for _ in range(2 * k)], "sem": [rng.randrange(128) for _ in range(3 * k)]}

    segs = [{"text": f"word{i} w", "state": "neutral", "codes": codes(rng.randint(1, 6))} for i in range(n_segments)]
    answer = {k: sum((s["codes"][k] for s in segs), []) for k in ("ling", "sem")}
    return {"id": "d", "category": "multi_state", "query_text": "q?", "answer_text": " ".join(s["text"] for s in segs),
            "answer_key": "", "query": codes(4), "answer": answer, "segments": segs}


@pytest.mark.parametrize("layout,ratio", COMBOS[1:])
@pytest.mark.parametrize("splice", SPLICES)
def test_sft_loss_mask_is_exactly_the_response(layout, ratio, splice):
    rng = random.Random(0)
    data = {"dialogues": [_dialogue(rng, 1), _dialogue(rng, 2)]}
    ex = sft_examples(data, VOCAB, "dual", layout, ratio, splice, aqta=True)
    assert sorted(e.kind for e in ex) == ["aqta", "aqta", "aqtaa", "aqtaa"]
    for e in ex:
        a = e.ids.index(VOCAB.assistant)
        assert not any(e.mask[: a + 1]) and all(e.mask[a + 1 :])  # response ids and eos, nothing else
        assert e.ids[-1] == VOCAB.eos
        resp = e.ids[a + 1 : -1]
        p = VOCAB.parse(resp, "text_only" if e.kind == "aqta" else layout, ratio)
        assert not p.errors
    # through batching: labels are set exactly where the mask is
    batch = LMBatches(ex, VOCAB.pad)[(tuple(range(len(ex))), sum(sum(e.mask[1:]) for e in ex), 0)]
    for r, e in enumerate(ex):
        n = len(e.ids) - 1
        lab = batch["labels"][r]
        assert torch.equal(lab[:n] != IGNORE, torch.tensor(e.mask[1:]))
        assert (lab[n:] == IGNORE).all()
        assert torch.equal(lab[:n][lab[:n] != IGNORE], torch.tensor([i for i, m in zip(e.ids, e.mask) if m]))


def test_loss_and_class_perplexities_cover_the_response_only():
    rng = random.Random(1)
    ex = sft_examples({"dialogues": [_dialogue(rng, 1)]}, VOCAB, "dual", "interleaved", (3, 5), "marker_preserving",
                      aqta=False)
    batch = LMBatches(ex, VOCAB.pad)[((0,), sum(ex[0].mask[1:]), 0)]
    logits = torch.randn(1, batch["labels"].size(1), VOCAB.size)
    ce = token_ce(logits, batch["labels"])
    resp = torch.tensor(ex[0].mask[1:])
    ids = torch.tensor(ex[0].ids[1:])
    manual = torch.nn.functional.cross_entropy(logits[0][resp], ids[resp])
    assert ce.sum() / resp.sum() == pytest.approx(manual.item(), rel=1e-5)
    from aqaa.lm_data import id_class_table

    sums = class_sums(ce, batch["labels"], id_class_table(VOCAB))
    assert sums[:, 1].sum() == resp.sum()
    n_audio = sum(1 for i in ids[resp].tolist() if i in VOCAB.audio_range)
    assert sums[2:, 1].sum() == n_audio
    assert perplexities(sums)["loss"] == pytest.approx(manual.item(), rel=1e-5)


def test_pretrain_tasks():
    rng = random.Random(2)
    data = {"dialogues": [_dialogue(rng, 2)]}
    clips = pretrain_clips(data, None, VOCAB, "dual")
    assert len(clips) == 4  # query, two segments, the whole answer
    ex = pretrain_examples(clips, VOCAB, ("asr", "tts", "interleave"), (10, 15))
    for e in ex:
        assert e.ids[0] == VOCAB.bos and e.ids[-1] == VOCAB.eos and not e.mask[0] and all(e.mask[1:])
    asr = [e for e in ex if e.kind == "asr"][0]
    assert asr.ids[1] == VOCAB.audio_start and VOCAB.text_end in asr.ids


def test_bucket_sampler_global_batches_do_not_depend_on_world_size():
    rng = random.Random(3)
    lengths = [rng.randint(20, 300) for _ in range(101)]
    n_loss = [n // 2 for n in lengths]
    one = BucketSampler(lengths, n_loss, 2048, world_size=1, rank=0, seed=5)
    two = [BucketSampler(lengths, n_loss, 2048, world_size=2, rank=r, seed=5) for r in range(2)]
    assert len(one) == len(two[0]) == len(two[1])
    for ep in (0, 1):
        for s in (one, *two):
            s.set_epoch(ep)
        for b1, b20, b21 in zip(one, *two):
            assert sorted(b1[0]) == sorted(b20[0] + b21[0])  # the same global batch, split
            assert b1[1] == b20[1] == b21[1] and b1[2] == b20[2]  # global target / id counts
    seen = sorted(i for b in one for i in b[0])
    assert seen == list(range(101))
    assert one.padding_fraction() < 0.15  # bucketing keeps padding small (random lengths, small budget)


# ----- the layout grammar ------------------------------------------------------------------


@st.composite
def answers(draw):
    streams = draw(st.sampled_from(["dual", "dual", "linguistic", "semantic"]))
    layout, ratio = draw(st.sampled_from(COMBOS))
    splice = draw(st.sampled_from(SPLICES))
    segs = []
    for _ in range(draw(st.integers(1, 3))):
        text = [VOCAB.text_id(t) for t in draw(st.lists(st.integers(0, 255), min_size=1, max_size=30))]
        g = draw(st.integers(1, 14))
        ling = draw(st.lists(st.integers(0, 63), min_size=2 * g, max_size=2 * g))
        sem = draw(st.lists(st.integers(0, 127), min_size=3 * g, max_size=3 * g))
        segs.append(Segment(text, audio_ids(VOCAB, ling, sem, streams)))
    return streams, layout, ratio, splice, segs


@settings(max_examples=400, deadline=None)
@given(answers())
def test_grammar_accepts_every_layout_output(a):
    streams, layout, ratio, splice, segs = a
    if layout == "text_only":
        segs = [Segment(s.text) for s in segs]
    ids = VOCAB.layout(segs, layout, ratio, splice) + [VOCAB.eos]
    g = LayoutGrammar(layout, ratio, splice, streams)
    assert g.accepts([token_class(VOCAB, i) for i in ids])


@pytest.mark.parametrize("layout,ratio", COMBOS)
@pytest.mark.parametrize("splice", SPLICES)
def test_grammar_walks_parse_and_relayout_to_themselves(layout, ratio, splice):
    rng = random.Random(hash((layout, ratio, splice)) % 1000)
    for streams in ("dual", "semantic"):
        g = LayoutGrammar(layout, ratio, splice, streams)
        for _ in range(60):
            s, ids = g.start(), []
            while s.phase != "done":
                allowed = g.allowed(s)
                if len(ids) > 120:  # head for the end
                    allowed = [c for c in allowed if g.min_to_close(g.step(s, c)) < g.min_to_close(s)]
                c = rng.choice(allowed)
                s = g.step(s, c)
                ids.append(_random_id(rng, c))
            p = VOCAB.parse(ids, layout, ratio)
            assert not p.errors
            assert VOCAB.layout(p.segments, layout, ratio, splice) + [VOCAB.eos] == ids


def _random_id(rng: random.Random, c: int) -> int:
    if c == TEXT:
        return VOCAB.text_id(rng.randrange(256))
    if c == LING:
        return VOCAB.audio_offset + rng.randrange(64)
    if c == SEM:
        return VOCAB.semantic_range.start + rng.randrange(128)
    return {3: VOCAB.text_end, 4: VOCAB.audio_start, 5: VOCAB.audio_end, 6: VOCAB.eos}[c]


def test_class_masks_partition_the_response_ids():
    m = class_masks(VOCAB, VOCAB.size)
    assert (m.sum(0) <= 1).all()
    assert m[EOS, VOCAB.eos] and m[AUDIO_END, VOCAB.audio_end] and not m[:, VOCAB.bos].any()


# ----- generation ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout,ratio", COMBOS)
@pytest.mark.parametrize("splice", SPLICES)
def test_constrained_generation_always_parses(layout, ratio, splice):
    model = small_lm(seed=hash((layout, splice)) % 100)
    prompt = VOCAB.prompt(audio_ids(VOCAB, list(range(8)), list(range(12))))
    for seed, budget in zip(range(6), (12, 25, 40, 70, 120, 200)):
        r = generate(model, VOCAB, prompt, layout=layout, ratio=ratio, splice=splice, max_new_tokens=budget,
                     temperature=1.5, top_p=0.95, seed=seed)
        assert r.finished and r.ids[-1] == VOCAB.eos and len(r.ids) <= budget
        assert not r.parse.errors, (r.parse.errors, [VOCAB.describe(i) for i in r.ids])
        assert r.segments
        assert VOCAB.layout(r.segments, layout, ratio, splice) + [VOCAB.eos] == r.ids


def test_single_codebook_generation_parses():
    model = small_lm()
    prompt = VOCAB.prompt(audio_ids(VOCAB, list(range(8)), list(range(12))))
    for streams in ("linguistic", "semantic"):
        r = generate(model, VOCAB, prompt, layout="interleaved", ratio=(3, 5), streams=streams, max_new_tokens=60,
                     temperature=1.2, seed=1)
        assert not r.parse.errors
        rng_ = VOCAB.linguistic_range if streams == "linguistic" else VOCAB.semantic_range
        assert all(a in rng_ for a in r.parse.audio)


def test_cache_and_no_cache_decode_the_same():
    model = small_lm()
    prompt = VOCAB.prompt(audio_ids(VOCAB, list(range(10)), list(range(15))))
    kw = dict(layout="interleaved", ratio=(10, 15), max_new_tokens=50, temperature=0.0, ras_window=0)
    a = generate(model, VOCAB, prompt, use_cache=True, **kw)
    b = generate(model, VOCAB, prompt, use_cache=False, **kw)
    assert a.ids == b.ids


def test_streaming_callbacks_see_audio_groups_as_they_come():
    model = small_lm()
    prompt = VOCAB.prompt(audio_ids(VOCAB, list(range(10)), list(range(15))))
    groups, seen = [], []
    r = generate(model, VOCAB, prompt, layout="audio_only", max_new_tokens=60, seed=3,
                 on_audio=lambda ling, sem: groups.append((ling, sem)), on_token=lambda i, k: seen.append((i, k)))
    assert [i for i, _ in seen] == r.ids
    assert all(len(ling) == 2 and len(sem) == 3 for ling, sem in groups)
    assert VOCAB.interleave_audio(sum((g[0] for g in groups), []), sum((g[1] for g in groups), [])) == r.parse.audio
    assert r.first_audio_seconds is not None


class FixedLM(torch.nn.Module):
    """A stand-in model whose next-id distribution is always ``probs`` (RAS test)."""

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        self.cfg = ModelConfig(vocab_size=len(probs), max_seq_len=4096)
        self.logits = torch.nn.Parameter(probs.log(), requires_grad=False)

    def setup_cache(self, *a, **k):
        pass

    def clear_cache(self):
        pass

    def forward(self, ids, pos=0, select=None):
        out = self.logits.expand(ids.size(0), ids.size(1), -1)
        return out[select] if select is not None else out


def test_repetition_aware_sampling_breaks_loops():
    # One semantic id holds 60% of the mass: nucleus sampling (top_p=0.5) picks it every time;
    # RAS re-draws a repeat from the full distribution, so about 40% of draws go elsewhere.
    tok = VOCAB.semantic_range.start + 7
    probs = torch.full((VOCAB.size,), 0.4 / (VOCAB.size - 1))
    probs[tok] = 0.6
    model = FixedLM(probs)
    prompt = VOCAB.prompt(audio_ids(VOCAB, list(range(10)), list(range(15))))
    kw = dict(layout="audio_only", streams="semantic", max_new_tokens=150, temperature=1.0, top_p=0.5, seed=0)
    plain = generate(model, VOCAB, prompt, ras_window=0, **kw)
    ras = generate(model, VOCAB, prompt, ras_window=10, ras_tau=0.1, **kw)
    assert plain.parse.audio.count(tok) == len(plain.parse.audio)
    share = ras.parse.audio.count(tok) / len(ras.parse.audio)
    assert ras.resampled > 20 and share < 0.85
    assert not ras.parse.errors and ras.finished
