"""TTS layer (aqaa.tts) and prosody measurements (aqaa.prosody).

Every voice state must be realised in the audio itself: each test synthesizes real
speech with eSpeak NG / Piper and measures it with aqaa.prosody.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aqaa.prosody import Prosody, measure
from aqaa.tts import (
    ASSISTANT_STATES,
    QUERY_STYLE_VOICES,
    QUERY_VOICES,
    Synthesizer,
    Voice,
)

SENTENCES = [
    "Seven times six is forty two, which is the answer to your question.",
    "The opposite of cold is hot, and the capital of Italy is Rome.",
    "Please remember to water the plants before you leave tomorrow morning.",
]
def vid(v: Voice) -> str:
    return f"{v.engine}:{v.name}:r{v.rate}:p{v.pitch}:v{v.volume}" + (":whisper" if v.whisper else "")


FIELDS = ("duration_s", "rate_cps", "f0_median_hz", "voiced_fraction", "rms_db")

# Margins: meaningful but far from the measured values (synthesis is deterministic,
# so these comparisons cannot flake; the margins guard against regressions).
RATE_RATIO = 1.15  # >= 15 % faster / slower
F0_RATIO = 1.10  # >= 10 % higher / lower
RMS_DB = 3.0  # >= 3 dB louder / softer


@pytest.fixture(scope="module")
def synth() -> Synthesizer:
    return Synthesizer()


def median_prosody(synth: Synthesizer, voice: Voice, sentences=SENTENCES) -> dict:
    measured = [measure(*synth.synthesize(t, voice), t) for t in sentences]
    return {f: float(np.median([getattr(m, f) for m in measured])) for f in FIELDS}


@pytest.fixture(scope="module")
def states(synth) -> dict[str, dict]:
    return {name: median_prosody(synth, v) for name, v in ASSISTANT_STATES.items()}


# --------------------------------------------------------------------------- states

def faster(a, b):
    return a["rate_cps"] >= RATE_RATIO * b["rate_cps"]


def slower(a, b):
    return a["rate_cps"] * RATE_RATIO <= b["rate_cps"]


def higher(a, b):
    return a["f0_median_hz"] >= F0_RATIO * b["f0_median_hz"]


def lower(a, b):
    return a["f0_median_hz"] * F0_RATIO <= b["f0_median_hz"]


def louder(a, b):
    return a["rms_db"] >= b["rms_db"] + RMS_DB


def softer(a, b):
    return a["rms_db"] <= b["rms_db"] - RMS_DB


def whispered(a, b):
    return a["voiced_fraction"] <= 0.5 * b["voiced_fraction"] and a["voiced_fraction"] < 0.2


STATE_EXPECTATIONS = {
    "slow": [slower],
    "fast": [faster],
    "loud": [louder],
    "soft": [softer],
    "high": [higher],
    "low": [lower],
    "whisper": [whispered],
    "happy": [higher, faster],
    "sad": [lower, slower],
    "child": [higher],
}


def test_assistant_state_inventory():
    expected = {"neutral", "slow", "fast", "loud", "soft", "high", "low", "whisper",
                "happy", "sad", "robot", "child"}
    assert set(ASSISTANT_STATES) == expected
    # One assistant voice: every state is the same eSpeak NG voice.
    assert {(v.engine, v.name) for v in ASSISTANT_STATES.values()} == {("espeak", "en-us")}
    assert ASSISTANT_STATES["robot"].pitch_range == 0


@pytest.mark.parametrize("state", sorted(STATE_EXPECTATIONS))
def test_state_differs_from_neutral_in_its_direction(states, state):
    neutral, got = states["neutral"], states[state]
    for check in STATE_EXPECTATIONS[state]:
        assert check(got, neutral), (
            f"{state} is not {check.__name__} than neutral: {got} vs {neutral}"
        )


def test_states_only_change_what_they_name(states):
    neutral = states["neutral"]
    # Volume states keep rate and pitch; pitch states keep the rate.
    for state in ("loud", "soft"):
        assert states[state]["rate_cps"] == pytest.approx(neutral["rate_cps"], rel=0.03)
        assert states[state]["f0_median_hz"] == pytest.approx(neutral["f0_median_hz"], rel=0.05)
    for state in ("high", "low"):
        assert states[state]["rate_cps"] == pytest.approx(neutral["rate_cps"], rel=0.05)


def _f0_spread(wav: np.ndarray, sr: int) -> float:
    import parselmouth

    pitch = parselmouth.Sound(wav.astype(np.float64), sr).to_pitch_ac(
        time_step=0.01, pitch_floor=50, pitch_ceiling=600
    )
    f0 = pitch.selected_array["frequency"]
    f0 = f0[f0 > 0]
    q90, q10 = np.percentile(12 * np.log2(f0), [90, 10])
    return float(q90 - q10)  # semitones


def test_robot_is_monotone(synth):
    text = SENTENCES[0]
    robot = _f0_spread(*synth.synthesize(text, ASSISTANT_STATES["robot"]))
    neutral = _f0_spread(*synth.synthesize(text, ASSISTANT_STATES["neutral"]))
    assert robot < 0.6 * neutral, (robot, neutral)


# ------------------------------------------------------------------ query voices

@pytest.fixture(scope="module")
def query_pool(synth) -> list[dict]:
    return [median_prosody(synth, v, SENTENCES[:2]) for v in QUERY_VOICES]


def test_query_voice_inventory():
    assert len(QUERY_VOICES) >= 8
    assert len(set(QUERY_VOICES)) == len(QUERY_VOICES)
    assert {v.engine for v in QUERY_VOICES} == {"piper", "espeak"}
    assert not any(v.whisper for v in QUERY_VOICES)
    assert all(0.5 <= v.volume <= 1.2 for v in QUERY_VOICES)
    assert set(QUERY_STYLE_VOICES) == {"fast", "slow", "high", "low", "whisper"}


def test_query_voices_are_plausible_and_varied(query_pool):
    for v, p in zip(QUERY_VOICES, query_pool):
        assert 10 < p["rate_cps"] < 18, (v, p)
        assert 75 < p["f0_median_hz"] < 220, (v, p)
        assert p["voiced_fraction"] > 0.5, (v, p)
    f0s = [p["f0_median_hz"] for p in query_pool]
    assert max(f0s) / min(f0s) > 1.8  # male and female speakers


@pytest.mark.parametrize("style", sorted(QUERY_STYLE_VOICES))
def test_query_style_voices_are_their_style(synth, query_pool, style):
    """Each style voice is beyond *every* neutral query voice in its direction, so
    the answer to "is my voice fast/slow/high/low, am I whispering" is in the
    query audio itself."""
    rate = [p["rate_cps"] for p in query_pool]
    f0 = [p["f0_median_hz"] for p in query_pool]
    vf = [p["voiced_fraction"] for p in query_pool]
    for voice in QUERY_STYLE_VOICES[style]:
        p = median_prosody(synth, voice, SENTENCES[:2])
        if style == "fast":
            assert p["rate_cps"] >= RATE_RATIO * max(rate), (voice, p)
        elif style == "slow":
            assert p["rate_cps"] * RATE_RATIO <= min(rate), (voice, p)
        elif style == "high":
            assert p["f0_median_hz"] >= F0_RATIO * max(f0), (voice, p)
        elif style == "low":
            assert p["f0_median_hz"] * F0_RATIO <= min(f0), (voice, p)
        else:
            assert p["voiced_fraction"] < 0.2 and p["voiced_fraction"] < 0.5 * min(vf), (voice, p)


# ------------------------------------------------------------------ engines

@pytest.mark.parametrize("voice", [Voice("piper", "joe"), Voice("espeak", "en-us"),
                                   Voice("espeak", "en-gb+f4")], ids=vid)
def test_engine_produces_plausible_speech(synth, voice):
    text = SENTENCES[1]
    wav, sr = synth.synthesize(text, voice)
    assert sr == 22050
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert np.all(np.isfinite(wav)) and np.abs(wav).max() <= 1.0
    assert np.abs(wav).max() > 0.1  # not silent
    p = measure(wav, sr, text)
    assert 2.0 < p.duration_s < 7.0, p  # ~12 words
    assert p.rms_db > -35, p
    assert p.voiced_fraction > 0.4, p


@pytest.mark.parametrize("voice", [Voice("piper", "joe"), Voice("piper", "joe", rate=1.3),
                                   ASSISTANT_STATES["neutral"], ASSISTANT_STATES["whisper"],
                                   ASSISTANT_STATES["happy"], Voice("espeak", "en-gb+f2")],
                         ids=vid)
def test_synthesis_is_deterministic(synth, voice):
    text = SENTENCES[0]
    first, sr1 = synth.synthesize(text, voice)
    # Other utterances in between must not leak state into the next one.
    synth.synthesize(SENTENCES[2], ASSISTANT_STATES["child"])
    synth.synthesize("Hello.", Voice("espeak", "en-us+f3", rate=1.4))
    second, sr2 = synth.synthesize(text, voice)
    third, _ = Synthesizer().synthesize(text, voice)
    assert sr1 == sr2
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, third)


_HASH_SCRIPT = """
import hashlib, sys
from aqaa.tts import ASSISTANT_STATES, Synthesizer, Voice
s = Synthesizer()
for v in (ASSISTANT_STATES["whisper"], Voice("espeak", "en-us+f3"), Voice("piper", "joe")):
    wav, sr = s.synthesize(sys.argv[1], v)
    print(hashlib.sha256(wav.tobytes()).hexdigest(), sr)
"""


def test_synthesis_is_identical_across_processes(synth):
    """The corpus builder runs one process per core: a fresh process (with a
    different clock time and heap) must give the very same samples."""
    import hashlib
    import os
    import subprocess
    import sys

    text = SENTENCES[2]
    expected = []
    for v in (ASSISTANT_STATES["whisper"], Voice("espeak", "en-us+f3"), Voice("piper", "joe")):
        wav, sr = synth.synthesize(text, v)
        expected.append(f"{hashlib.sha256(wav.tobytes()).hexdigest()} {sr}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", _HASH_SCRIPT, text], env=env, cwd=root,
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split("\n")[:3] == expected


def test_espeak_language_codes_keep_their_variant(synth):
    plain, _ = synth.synthesize("Hello there.", Voice("espeak", "en-gb"))
    female, _ = synth.synthesize("Hello there.", Voice("espeak", "en-gb+f2"))
    same, _ = synth.synthesize("Hello there.", Voice("espeak", "en+f2"))
    assert not (plain.shape == female.shape and np.array_equal(plain, female))
    np.testing.assert_array_equal(female, same)


def test_loud_output_is_clipped_to_unit_range(synth):
    wav, _ = synth.synthesize("Loud and clear!", Voice("piper", "joe", volume=3.0))
    assert wav.dtype == np.float32
    assert np.abs(wav).max() <= 1.0
    assert np.abs(wav).max() == pytest.approx(1.0)


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("text", ["", "   \n"])
@pytest.mark.parametrize("voice", [Voice("espeak", "en-us"), Voice("piper", "joe")], ids=vid)
def test_empty_text_is_rejected(synth, text, voice):
    with pytest.raises(ValueError, match="empty"):
        synth.synthesize(text, voice)


def test_unknown_engine_is_rejected(synth):
    with pytest.raises(ValueError, match="festival"):
        synth.synthesize("Hello.", Voice("festival", "kal"))


@pytest.mark.parametrize("name", ["xx-yy", "en-us+nonsense", "elvish+f2"])
def test_unknown_espeak_voice_is_rejected(synth, name):
    with pytest.raises(ValueError, match=name.split("+")[-1] if "+" in name else name):
        synth.synthesize("Hello.", Voice("espeak", name))


def test_unknown_piper_voice_and_bad_parameters_are_rejected(synth):
    with pytest.raises(ValueError, match="amy"):
        synth.synthesize("Hello.", Voice("piper", "amy"))
    with pytest.raises(ValueError, match="whisper"):
        synth.synthesize("Hello.", Voice("piper", "joe", whisper=True))
    with pytest.raises(ValueError, match="whisper"):
        synth.synthesize("Hello.", Voice("espeak", "en-us+f2", whisper=True))
    with pytest.raises(ValueError, match="rate"):
        synth.synthesize("Hello.", Voice("espeak", "en-us", rate=0.0))
    with pytest.raises(ValueError, match="pitch"):
        synth.synthesize("Hello.", Voice("espeak", "en-us", pitch=150))
    with pytest.raises(ValueError, match="volume"):
        synth.synthesize("Hello.", Voice("espeak", "en-us", volume=2.5))


# ------------------------------------------------------------------ prosody itself

def _tone(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_measure_on_a_padded_tone():
    sr = 16000
    pad = np.zeros(int(0.5 * sr), dtype=np.float32)
    wav = np.concatenate([pad, _tone(200.0, 1.0, sr), pad])
    p = measure(wav, sr, "abc de1 !")  # 6 letters/digits
    assert isinstance(p, Prosody)
    assert p.duration_s == pytest.approx(1.0, abs=0.05)
    assert p.rate_cps == pytest.approx(6 / p.duration_s)
    assert p.f0_median_hz == pytest.approx(200.0, rel=0.01)
    assert p.voiced_fraction > 0.9
    assert p.rms_db == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.5)


def test_measure_accepts_torch_and_channels():
    sr = 16000
    tone = _tone(150.0, 0.8, sr)
    a = measure(tone, sr, "hello")
    b = measure(torch.from_numpy(tone)[None, :], sr, "hello")
    assert a == b


def test_measure_noise_is_unvoiced_and_silence_is_empty():
    sr = 16000
    noise = np.random.default_rng(0).normal(0, 0.1, sr).astype(np.float32)
    assert measure(noise, sr, "shh").voiced_fraction < 0.2
    blip = measure(_tone(300.0, 0.02, sr), sr, "a")  # shorter than Praat's window
    assert blip.duration_s > 0 and math.isnan(blip.f0_median_hz)
    assert math.isnan(measure(np.zeros(0, dtype=np.float32), sr, "x").rate_cps)
    silent = measure(np.zeros(sr, dtype=np.float32), sr, "nothing")
    assert silent.duration_s == 0.0
    assert math.isnan(silent.f0_median_hz) and math.isnan(silent.rate_cps)
