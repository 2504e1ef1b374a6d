"""The eval stage: perplexities and MOS proxies of a backbone artifact on the test split.

1. Teacher-forced perplexities (text, audio, linguistic, semantic) of the test dialogues'
   responses in the backbone's layout (as the SFT stages compute them on val).
2. For every test dialogue: the spoken question -> ``Assistant.answer`` (generation in the
   trained layout, vocoding) -> judged offline (``aqaa.judges``: Whisper tiny.en
   transcript, DNSMOS) -> ``aqaa.metrics``: factuality, relevance, text_audio_wer,
   control_accuracy, chat_proxy. Per category and overall.

control_accuracy compares the answer's prosody with the same words spoken by the
assistant's neutral voice and passed through the same tokenizer and vocoder, so the
channel (and its artefacts) is the same on both sides and only the voice state differs.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from .audio import TOKENIZER_SR, VOCODER_SR, load_wav
from .metrics import chat_proxy, control_ok, factuality, relevance, text_audio_wer

METRICS = ("factuality", "relevance", "text_audio_wer", "control_accuracy", "dnsmos_p808", "dnsmos_sig",
           "dnsmos_bak", "dnsmos_ovrl", "chat_proxy", "seconds_to_first_audio", "real_time_factor")


def teacher_forced_ppl(assistant, tokens_dir: Path, split: str = "test") -> dict:
    """Perplexities of the split's AQTAA responses under the backbone (no sampling)."""
    from .lm_data import class_sums, id_class_table, perplexities, sft_examples, token_ce, IGNORE
    from .tokenizer.tokenize_corpus import load_tokens

    v = assistant.vocab
    ex = sft_examples(load_tokens(tokens_dir, split), v, assistant.streams, assistant.layout, assistant.ratio,
                      assistant.splice, aqta=False)
    table = id_class_table(v, assistant.model.cfg.vocab_size)
    sums = torch.zeros(4, 2)
    with torch.inference_mode():
        for e in ex:
            ids = torch.tensor(e.ids)
            labels = torch.where(torch.tensor(e.mask[1:]), ids[1:], torch.full_like(ids[1:], IGNORE))
            logits = assistant.model(ids[None, :-1])
            sums += class_sums(token_ce(logits, labels[None]), labels[None], table)
    return {k: v for k, v in perplexities(sums).items()}


def _mean(vals) -> float:
    vals = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.fmean(vals) if vals else float("nan")


def evaluate(assistant, corpus_dir: Path, tokens_dir: Path, asr, dnsmos, synth=None, split: str = "test",
             limit: int | None = None, progress: bool = True,
             on_sample: Callable[[dict, torch.Tensor, torch.Tensor], None] | None = None) -> dict:
    """Score ``assistant`` on a corpus split; returns {"overall", "per_category", "ppl", "rows"}."""
    from .corpus.manifest import read_dialogues
    from .prosody import measure
    from .tts import ASSISTANT_STATES

    rows_out = []
    dialogues = read_dialogues(corpus_dir, split)[:limit] if limit else read_dialogues(corpus_dir, split)
    for d in tqdm(dialogues, desc=f"eval {split}", unit="dialogue", disable=not progress):
        q, _ = load_wav(Path(corpus_dir) / d.query_audio, TOKENIZER_SR)
        res = assistant.answer(q, TOKENIZER_SR)
        row = {"id": d.id, "category": d.category, "query_text": d.query_text, "reference": d.answer_text,
               "answer_key": d.answer_key, "generated_text": res.text,
               "seconds_to_first_audio": res.seconds_to_first_audio, "real_time_factor": res.real_time_factor,
               "parse_errors": len(res.parse_errors)}
        if len(res.audio) > VOCODER_SR // 10:
            transcript = asr.transcribe(res.audio, VOCODER_SR)
            mos = dnsmos(res.audio, VOCODER_SR)
        else:  # no audio: nothing said, nothing to score as speech
            transcript, mos = "", {}
        row["transcript"] = transcript
        row["factuality"] = factuality(transcript, d.answer_key) if d.answer_key else float("nan")
        row["relevance"] = relevance(transcript, d.answer_text)
        row["text_audio_wer"] = text_audio_wer(res.text, transcript) if res.text else float("nan")
        for k in ("p808", "sig", "bak", "ovrl"):
            row[f"dnsmos_{k}"] = mos.get(f"{k}_mos", float("nan"))
        row["control_accuracy"] = None
        states = [s.state for s in d.segments]
        if synth is not None and d.category in ("voice_control", "multi_state") and len(res.audio):
            # Score the whole answer against its first non-neutral requested state.
            target = next((s for s in states if s != "neutral"), None)
            if target:
                ref_wav, ref_sr = synth.synthesize(res.text or d.answer_text, ASSISTANT_STATES["neutral"])
                ref_audio = assistant.vocoder.decode(*assistant.tokenizer.encode(torch.as_tensor(ref_wav), ref_sr))
                text = res.text or d.answer_text
                got = asdict(measure(res.audio, VOCODER_SR, text))
                ref = asdict(measure(ref_audio, VOCODER_SR, text))
                row["control_accuracy"] = control_ok(target, got, ref)
        row["chat_proxy"] = chat_proxy(row["factuality"], row["relevance"], row["text_audio_wer"],
                                       row["dnsmos_ovrl"], row["control_accuracy"])
        rows_out.append(row)
        if on_sample is not None:
            on_sample(row, q, res.audio)
    cats = sorted({r["category"] for r in rows_out})
    per_cat = {c: {m: _mean([r[m] for r in rows_out if r["category"] == c]) for m in METRICS} for c in cats}
    overall = {m: _mean([r[m] for r in rows_out]) for m in METRICS}
    overall["n"] = len(rows_out)
    return {"overall": overall, "per_category": per_cat, "ppl": teacher_forced_ppl(assistant, tokens_dir, split),
            "rows": rows_out}
