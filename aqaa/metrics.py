"""Answer-level metrics: the offline proxies for the paper's judged scores (DESIGN.md 7).

Every function here is pure (text and numbers in, a number out), so the eval stage, the
benchmarks and the tests score answers the same way. The audio-side inputs come from
``aqaa.judges`` (ASR transcript, DNSMOS) and ``aqaa.prosody`` (rate, F0, energy).
"""

from __future__ import annotations

import math
import re

import jiwer

from .corpus.templates import contains_key, normalize_text, number_to_words, numbers_in_text, words_to_number

# Function words carry no answer content; relevance counts the rest.
STOPWORDS = frozenset(
    "a an the is are was were be am i you your my me it its of to in on at for and or but so do does did "
    "what which who how this that there here yes no not please say said".split()
)

# The direction each voice state names, against the same words in the neutral voice:
# (measure, sign, margin). Margins are those the corpus is built to exceed
# (benchmarks/corpus.py); a model's answer counts as controlled when it clears them.
STATE_DIRECTIONS: dict[str, list[tuple[str, str, float]]] = {
    "slow": [("rate_ratio", "<", 0.15)],
    "fast": [("rate_ratio", ">", 0.15)],
    "loud": [("rms_db_diff", ">", 3.0)],
    "soft": [("rms_db_diff", "<", 3.0)],
    "high": [("f0_ratio", ">", 0.10)],
    "low": [("f0_ratio", "<", 0.10)],
    "whisper": [("voiced_diff", "<", 0.3)],
    "happy": [("f0_ratio", ">", 0.10), ("rate_ratio", ">", 0.05)],
    "sad": [("f0_ratio", "<", 0.10), ("rate_ratio", "<", 0.05)],
    "child": [("f0_ratio", ">", 0.10)],
    "robot": [],  # monotone: its F0 spread is not in Prosody; not scored
}


def normalize_transcript(text: str) -> str:
    """Lowercase words, digits spelled out ("14" -> "fourteen"), punctuation dropped.

    ASR writes numbers as digits, the corpus as words: both sides go through this.
    """
    def spell(m: re.Match) -> str:
        n = int(m.group())
        return f" {number_to_words(n)} " if n < 1_000_000 else m.group()

    return normalize_text(re.sub(r"\d+", spell, text.replace(",", "")))


def factuality(transcript: str, answer_key: str) -> float:
    """1.0 if the answer key occurs (as whole words) in the transcript, else 0.0.

    A numeric key must occur as a whole number: "twenty one" does not contain "twenty".
    """
    key, text = normalize_transcript(answer_key), normalize_transcript(transcript)
    try:
        number = words_to_number(key)
    except ValueError:
        return float(contains_key(text, key))
    return float(number in numbers_in_text(text))


def content_words(text: str) -> list[str]:
    return [w for w in normalize_transcript(text).split() if w not in STOPWORDS]


def relevance(transcript: str, reference_answer: str) -> float:
    """Share of the reference answer's content words found in the transcript."""
    ref = content_words(reference_answer)
    if not ref:
        return float("nan")
    have = set(normalize_transcript(transcript).split())
    return sum(w in have for w in ref) / len(ref)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER after normalisation (jiwer); an empty reference gives 0 if the hypothesis is empty too."""
    ref, hyp = normalize_transcript(reference), normalize_transcript(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp))


def text_audio_wer(generated_text: str, transcript: str) -> float:
    """WER of the audio's transcript against the text the model generated with it: how well
    the answer's audio says what its text says (what interleaving and masked DPO protect)."""
    return word_error_rate(generated_text, transcript)


def prosody_change(prosody: dict, neutral: dict) -> dict:
    """A state's prosody against the same words in the neutral voice."""
    def ratio(a, b):
        return a / b if b and b == b and a == a else float("nan")

    return {
        "rate_ratio": ratio(prosody["rate_cps"], neutral["rate_cps"]),
        "f0_ratio": ratio(prosody["f0_median_hz"], neutral["f0_median_hz"])
        if prosody["voiced_fraction"] >= 0.1 else float("nan"),
        "voiced_diff": prosody["voiced_fraction"] - neutral["voiced_fraction"],
        "rms_db_diff": prosody["rms_db"] - neutral["rms_db"],
    }


def control_ok(state: str, prosody: dict, neutral: dict) -> float | None:
    """1.0 if the audio moved in every direction the state names, 0.0 if not, None if the
    state names no measurable direction (neutral, robot, unknown)."""
    checks = STATE_DIRECTIONS.get(state)
    if not checks:
        return None
    change = prosody_change(prosody, neutral)
    for key, sign, margin in checks:
        v = change[key]
        ref = 1.0 if key.endswith("ratio") else 0.0
        if v != v or not ((v < ref - margin) if sign == "<" else (v > ref + margin)):
            return 0.0
    return 1.0


# chat_proxy: a documented stand-in for the paper's LLM-judged Chat score (1-5). It is a
# weighted mean of what can be measured offline, mapped to [1, 5]:
CHAT_WEIGHTS = {
    "factuality": 0.35,  # the answer is right
    "relevance": 0.25,  # it says what the reference says
    "intelligibility": 0.15,  # 1 - min(text_audio_wer, 1): its audio says what its text says
    "control_accuracy": 0.15,  # it speaks in the requested voice (voice_control, multi_state only)
    "quality": 0.10,  # (dnsmos_ovrl - 1) / 4, clipped to [0, 1]
}


def chat_proxy(
    factuality: float,
    relevance: float,
    text_audio_wer: float,
    dnsmos_ovrl: float | None = None,
    control_accuracy: float | None = None,
) -> float:
    """``1 + 4 * sum_k w_k * s_k / sum_k w_k`` over the components that apply (each in [0, 1];
    a missing one, None or NaN, drops out with its weight). Not an LLM judge."""
    parts = {
        "factuality": factuality,
        "relevance": relevance,
        "intelligibility": None if text_audio_wer is None else 1.0 - min(max(text_audio_wer, 0.0), 1.0),
        "control_accuracy": control_accuracy,
        "quality": None if dnsmos_ovrl is None else min(max((dnsmos_ovrl - 1.0) / 4.0, 0.0), 1.0),
    }
    num = den = 0.0
    for k, v in parts.items():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        num += CHAT_WEIGHTS[k] * v
        den += CHAT_WEIGHTS[k]
    return 1.0 + 4.0 * num / den if den else float("nan")
