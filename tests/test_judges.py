"""The offline judges and answer metrics on known audio (DESIGN.md 7)."""

from dataclasses import asdict

import numpy as np
import pytest

from aqaa.metrics import control_ok, factuality, word_error_rate
from aqaa.prosody import measure
from aqaa.tts import ASSISTANT_STATES, Synthesizer

judges = pytest.importorskip("aqaa.judges")


@pytest.fixture(scope="module")
def synth():
    return Synthesizer()


@pytest.fixture(scope="module")
def asr():
    return judges.AsrJudge()


def test_reference_answer_scores_factuality_one_and_low_wer(synth, asr):
    text = "The answer is fourteen."
    wav, sr = synth.synthesize(text, ASSISTANT_STATES["neutral"])
    heard = asr.transcribe(wav, sr)
    assert factuality(heard, "fourteen") == 1.0
    assert word_error_rate(text, heard) <= 0.25


def test_wrong_answer_scores_factuality_zero(synth, asr):
    wav, sr = synth.synthesize("The answer is fifteen.", ASSISTANT_STATES["neutral"])
    assert factuality(asr.transcribe(wav, sr), "fourteen") == 0.0


def test_silence_scores_low_dnsmos(synth):
    mos = judges.DnsMos()
    silence = mos(np.zeros(24000 * 2, dtype=np.float32), 24000)
    speech = mos(*synth.synthesize("Paris is the capital of France.", ASSISTANT_STATES["neutral"]))
    assert silence["ovrl_mos"] < 2.0 and silence["ovrl_mos"] < speech["ovrl_mos"]


def test_slowed_voice_counts_as_slow(synth):
    text = "Please close the door when you leave."
    neutral = asdict(measure(*synth.synthesize(text, ASSISTANT_STATES["neutral"]), text))
    slow = asdict(measure(*synth.synthesize(text, ASSISTANT_STATES["slow"]), text))
    assert control_ok("slow", slow, neutral) == 1.0
    assert control_ok("fast", slow, neutral) == 0.0
