"""Answer metrics on known text and prosody inputs (the audio-side sanity checks live with eval)."""

import math

import pytest

from aqaa.metrics import (chat_proxy, control_ok, factuality, normalize_transcript, relevance,
                          text_audio_wer)


def test_normalize_spells_digits():
    assert normalize_transcript("The answer is 14.") == "the answer is fourteen"
    assert normalize_transcript("It's 48!") == "it s forty eight"


def test_factuality():
    assert factuality("The answer is 14.", "fourteen") == 1.0
    assert factuality("The answer is fourteen.", "fourteen") == 1.0
    assert factuality("The answer is fifteen.", "fourteen") == 0.0
    assert factuality("The answer is twenty one.", "twenty") == 0.0  # whole words only
    assert factuality("No, you are not whispering.", "you are whispering") == 0.0


def test_relevance_and_wer():
    assert relevance("Paris is the capital of France", "The capital of France is Paris.") == 1.0
    assert relevance("Rome", "The capital of France is Paris.") == 0.0
    assert relevance("capital of Italy", "The capital of France is Paris.") == pytest.approx(1 / 3)
    assert text_audio_wer("The answer is seven.", "the answer is 7") == 0.0
    assert text_audio_wer("The answer is seven.", "the answer is eight") == pytest.approx(0.25)
    assert text_audio_wer("The answer is seven.", "") == 1.0


N = {"rate_cps": 14.0, "f0_median_hz": 100.0, "voiced_fraction": 0.8, "rms_db": -21.0}


def test_control_ok_directions():
    slow = dict(N, rate_cps=8.0)
    assert control_ok("slow", slow, N) == 1.0 and control_ok("fast", slow, N) == 0.0
    assert control_ok("high", dict(N, f0_median_hz=150.0), N) == 1.0
    assert control_ok("low", dict(N, f0_median_hz=150.0), N) == 0.0
    assert control_ok("whisper", dict(N, voiced_fraction=0.02, f0_median_hz=500.0), N) == 1.0
    assert control_ok("loud", dict(N, rms_db=-15.0), N) == 1.0 and control_ok("soft", N, N) == 0.0
    assert control_ok("happy", dict(N, f0_median_hz=140.0, rate_cps=17.0), N) == 1.0
    assert control_ok("happy", dict(N, f0_median_hz=140.0, rate_cps=12.0), N) == 0.0
    assert control_ok("neutral", N, N) is None and control_ok("robot", N, N) is None


def test_chat_proxy_range_and_formula():
    assert chat_proxy(1.0, 1.0, 0.0, dnsmos_ovrl=5.0, control_accuracy=1.0) == pytest.approx(5.0)
    assert chat_proxy(0.0, 0.0, 1.0, dnsmos_ovrl=1.0, control_accuracy=0.0) == pytest.approx(1.0)
    # missing components drop out with their weights
    assert chat_proxy(1.0, 0.0, 0.0) == pytest.approx(1 + 4 * (0.35 + 0.15) / 0.75)
    assert math.isnan(chat_proxy(float("nan"), float("nan"), None))
