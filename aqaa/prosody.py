"""Prosody measurements of a spoken utterance: duration, rate, F0, voicing, level.

Used to check that voice states are realised in the audio (tests, corpus QA) and to
answer "voice understanding" questions from the query's own prosody.

F0 and voicing come from Praat's autocorrelation pitch tracker (Boersma 1993,
``Sound: To Pitch (ac)``) through ``praat-parselmouth``, the field's standard tool. It
was chosen over ``torchaudio.functional.detect_pitch_frequency`` after measuring both
on the project's eSpeak NG and Piper voices: torchaudio's NCCF-plus-median estimate
has no voicing decision (every frame gets a pitch, so it cannot give a voiced fraction
and reports ~800 Hz on whispered speech) and it mis-tracked the low-pitched voice
(127 Hz for eSpeak "pitch 10" against 111 Hz for the neutral voice, i.e. the wrong
direction), while Praat gave 76 / 102 / 155 Hz for low / neutral / high and a voiced
fraction of 0.01 for whisper against about 0.6 for normal speech.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
import parselmouth

__all__ = ["Prosody", "measure", "PITCH_FLOOR_HZ", "PITCH_CEILING_HZ"]

PITCH_FLOOR_HZ = 50.0  # low enough for eSpeak "pitch 0" male voices
PITCH_CEILING_HZ = 600.0  # high enough for "child" and female variants
_HOP_S = 0.01
_WIN_S = 0.025
# Frames more than this far below the loudest frame (or below the absolute floor)
# count as silence when trimming and when selecting speech frames.
_REL_THRESHOLD_DB = 40.0
_ABS_FLOOR_DBFS = -70.0
_EPS = 1e-12


@dataclass
class Prosody:
    """Prosody of one utterance. Check ``voiced_fraction`` before trusting
    ``f0_median_hz``: on whispered speech (voiced fraction ~0.01) the median comes
    from a handful of spurious frames and means nothing."""

    duration_s: float  # duration of the speech part (leading/trailing silence trimmed)
    rate_cps: float  # letters/digits of the text per second of speech
    f0_median_hz: float  # median F0 over voiced frames (nan if none)
    voiced_fraction: float  # share of speech frames that are voiced (whisper -> low)
    rms_db: float  # RMS level in dBFS over the speech part


def _to_mono_float(wav) -> np.ndarray:
    torch = sys.modules.get("torch")  # a tensor implies torch is imported already
    if torch is not None and isinstance(wav, torch.Tensor):
        wav = wav.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(wav, dtype=np.float64)
    if x.ndim == 2:
        # (channels, samples) or (samples, channels): average the short axis
        x = x.mean(axis=0 if x.shape[0] <= x.shape[1] else 1)
    elif x.ndim != 1:
        raise ValueError(f"expected a mono or (channels, samples) waveform, got {x.shape}")
    return np.nan_to_num(x)


def _frame_db(x: np.ndarray, sr: int, centers_s: np.ndarray) -> np.ndarray:
    """RMS level (dBFS) of a _WIN_S window around each centre time."""
    half = max(1, int(round(_WIN_S * sr / 2)))
    c = np.clip(np.round(centers_s * sr).astype(np.int64), 0, max(len(x) - 1, 0))
    csum = np.concatenate([[0.0], np.cumsum(x * x)])
    lo = np.clip(c - half, 0, len(x))
    hi = np.clip(c + half, 0, len(x))
    n = np.maximum(hi - lo, 1)
    return 10.0 * np.log10((csum[hi] - csum[lo]) / n + _EPS)


def _count_chars(text: str) -> int:
    return sum(1 for ch in text if ch.isalnum())


def measure(wav, sample_rate: int, text: str) -> Prosody:
    """Measure the prosody of ``wav`` (numpy array or torch tensor, mono or
    (channels, samples)) at ``sample_rate`` Hz; ``text`` is what it says (used only
    for the speaking rate)."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    x = _to_mono_float(wav)
    nan = float("nan")
    n_chars = _count_chars(text)
    if x.size == 0:
        return Prosody(0.0, nan, nan, nan, -math.inf)

    # 1. Trim leading/trailing silence by frame energy.
    centers = np.arange(0.0, len(x) / sample_rate, _HOP_S) + _HOP_S / 2
    db = _frame_db(x, sample_rate, centers)
    threshold = max(float(db.max()) - _REL_THRESHOLD_DB, _ABS_FLOOR_DBFS)
    active = np.nonzero(db > threshold)[0]
    if active.size == 0:
        level = float(20.0 * np.log10(np.sqrt(np.mean(x * x)) + _EPS))
        return Prosody(0.0, nan, nan, nan, level)
    start = max(0, int(round((centers[active[0]] - _HOP_S / 2) * sample_rate)))
    stop = min(len(x), int(round((centers[active[-1]] + _HOP_S / 2) * sample_rate)))
    speech = x[start:stop]
    duration = len(speech) / sample_rate
    rms_db = float(20.0 * np.log10(np.sqrt(np.mean(speech * speech)) + _EPS))
    rate = n_chars / duration if duration > 0 else nan

    # 2. F0 and voicing with Praat's autocorrelation method on the speech part.
    f0_median, voiced_fraction = nan, nan
    try:
        snd = parselmouth.Sound(speech, sampling_frequency=float(sample_rate))
        pitch = snd.to_pitch_ac(
            time_step=_HOP_S, pitch_floor=PITCH_FLOOR_HZ, pitch_ceiling=PITCH_CEILING_HZ
        )
        f0 = np.asarray(pitch.selected_array["frequency"], dtype=np.float64)
        times = np.asarray(pitch.xs(), dtype=np.float64)
    except parselmouth.PraatError:  # too short for the analysis window
        f0 = np.zeros(0)
        times = np.zeros(0)
    if f0.size:
        # Speech frames = frames above the silence threshold (pauses inside the
        # utterance are neither voiced nor unvoiced speech).
        is_speech = _frame_db(speech, sample_rate, times) > threshold
        voiced = (f0 > 0) & is_speech
        if is_speech.any():
            voiced_fraction = float(voiced.sum() / is_speech.sum())
        if voiced.any():
            f0_median = float(np.median(f0[voiced]))
    return Prosody(
        duration_s=float(duration),
        rate_cps=float(rate),
        f0_median_hz=f0_median,
        voiced_fraction=voiced_fraction,
        rms_db=rms_db,
    )
