"""``Vocoder``: dual-codebook tokens -> 24 kHz speech (DESIGN.md section 9).

>>> voc = Vocoder.load(artifact_dir)
>>> wav = voc.decode(ling_codes, sem_codes)            # Tensor[samples], 24 kHz, in [-1, 1]
>>> wav = voc.decode(ling, sem, steps=20, guidance=0.0, seed=3)

An artifact directory holds ``vocoder.json`` (configs, inference defaults) and the state
dicts ``flow.pt`` and, when a generator was trained, ``generator.pt`` (torch.save; read
with ``weights_only=True``). Without ``generator.pt`` the mel goes through Griffin-Lim.

Length: N linguistic codes (120 ms per two) make 6 N mel frames and 6 N * 240 samples,
i.e. N / 16.67 s of audio, whatever the semantic stream's length within tolerance.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch

from .flow import LING_UP, FlowConfig, TokenToMel
from .generator import Generator, GeneratorConfig
from .mel import GriffinLimVocoder, MelConfig

FORMAT_VERSION = 1
CONFIG_FILE = "vocoder.json"
FLOW_FILE = "flow.pt"
GENERATOR_FILE = "generator.pt"
WAVE_BACKENDS = ("istft", "griffinlim")
LING_HZ, SEM_HZ = 50 / 3, 25.0
MAX_MISMATCH_S = 0.12  # linguistic vs semantic duration: 2 linguistic / 3 semantic codes of slack


def _state(net: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


def save_vocoder(out_dir: str | Path, flow: TokenToMel, mel_cfg: MelConfig, generator: Generator | None = None,
                 defaults: dict | None = None, extra: dict | None = None) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(_state(flow), out_dir / FLOW_FILE)
    if generator is not None:
        torch.save(_state(generator), out_dir / GENERATOR_FILE)
    meta = {
        "format_version": FORMAT_VERSION,
        "sample_rate": mel_cfg.sample_rate,
        "mel": asdict(mel_cfg),
        "flow": asdict(flow.cfg),
        "generator": asdict(generator.cfg) if generator is not None else None,
        "defaults": {"steps": 10, "guidance": 0.0, "seed": 0, "griffin_lim_iters": 32, **(defaults or {})},
        **(extra or {}),
    }
    (out_dir / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def _codes(codes, name: str, n: int) -> torch.Tensor:
    try:
        t = torch.as_tensor(codes if torch.is_tensor(codes) else list(codes))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} codes must be a sequence of integers ({e})") from e
    if t.dim() != 1:
        raise ValueError(f"{name} codes must be one flat sequence, got shape {tuple(t.shape)}")
    if len(t) == 0:
        raise ValueError(f"{name} codes are empty: nothing to vocode")
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise ValueError(f"{name} codes must be integers")
    t = t.long()
    bad = (t < 0) | (t >= n)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"{name} code {int(t[i])} at position {i} is outside the codebook [0, {n})")
    return t


class Vocoder:
    def __init__(self, flow: TokenToMel, mel_cfg: MelConfig, generator: Generator | None = None,
                 defaults: dict | None = None, meta: dict | None = None, device: str = "cpu"):
        self.device = torch.device(device)
        self.flow = flow.to(self.device).eval()
        self.generator = generator.to(self.device).eval() if generator is not None else None
        self.mel_cfg = mel_cfg
        self.defaults = {"steps": 10, "guidance": 0.0, "seed": 0, "griffin_lim_iters": 32, **(defaults or {})}
        self.meta = meta or {}
        self._griffin_lim: GriffinLimVocoder | None = None
        self.last_stats: dict = {}  # of the last decode: nfe, seconds, real-time factor

    # ----- loading ---------------------------------------------------------------------
    @classmethod
    def load(cls, artifact_dir: str | Path, device: str = "cpu") -> "Vocoder":
        d = Path(artifact_dir)
        cfg_path = d / CONFIG_FILE
        if not cfg_path.is_file():
            raise FileNotFoundError(f"no {CONFIG_FILE} in {d}: is it a vocoder artifact (aqaa train vocoder)?")
        meta = json.loads(cfg_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{cfg_path}: format_version {meta.get('format_version')} is not {FORMAT_VERSION}")
        flow = TokenToMel(FlowConfig(**meta["flow"]))
        flow.load_state_dict(cls._weights(d / FLOW_FILE))
        generator = None
        if meta.get("generator"):
            generator = Generator(GeneratorConfig(**meta["generator"]))
            generator.load_state_dict(cls._weights(d / GENERATOR_FILE))
        return cls(flow, MelConfig(**meta["mel"]), generator, meta.get("defaults"), meta, device)

    @staticmethod
    def _weights(path: Path) -> dict:
        if not path.is_file():
            raise FileNotFoundError(f"vocoder weights missing: {path}")
        return torch.load(path, map_location="cpu", weights_only=True)

    # ----- properties ------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.mel_cfg.sample_rate

    @property
    def n_linguistic(self) -> int:
        return self.flow.cfg.n_linguistic

    @property
    def n_semantic(self) -> int:
        return self.flow.cfg.n_semantic

    @property
    def has_generator(self) -> bool:
        return self.generator is not None

    def samples_for(self, n_linguistic_codes: int) -> int:
        """Output length of ``decode`` for this many linguistic codes."""
        return n_linguistic_codes * LING_UP * self.mel_cfg.hop

    # ----- decoding --------------------------------------------------------------------
    def check_codes(self, ling_codes, sem_codes, tolerance_s: float = MAX_MISMATCH_S):
        """Validate both streams; returns them as LongTensors. Raises ValueError."""
        ling = _codes(ling_codes, "linguistic", self.n_linguistic)
        sem = _codes(sem_codes, "semantic", self.n_semantic)
        gap = abs(len(ling) / LING_HZ - len(sem) / SEM_HZ)
        if gap > tolerance_s + 1e-9:
            raise ValueError(
                f"linguistic and semantic streams disagree in duration: {len(ling)} linguistic codes = "
                f"{len(ling) / LING_HZ:.2f} s but {len(sem)} semantic codes = {len(sem) / SEM_HZ:.2f} s "
                f"(expected 3 semantic per 2 linguistic codes, tolerance {tolerance_s:.2f} s)"
            )
        return ling, sem

    @torch.inference_mode()
    def decode_mel(self, ling_codes, sem_codes, steps: int | None = None, guidance: float | None = None,
                   seed: int | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Tokens -> log-mel [n_mels, 6 * len(ling)] by the flow's ODE."""
        steps = int(self.defaults["steps"] if steps is None else steps)
        guidance = float(self.defaults["guidance"] if guidance is None else guidance)
        seed = int(self.defaults["seed"] if seed is None else seed)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if guidance < 0:
            raise ValueError(f"guidance must be >= 0, got {guidance}")
        ling, sem = self.check_codes(ling_codes, sem_codes)
        T = len(ling) * LING_UP
        mask = torch.ones(1, 1, T, device=self.device)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        est = self.flow.estimator
        est.calls = est.rows = 0
        mel = self.flow.sample(ling[None].to(self.device), sem[None].to(self.device), mask, steps=steps,
                               guidance=guidance, temperature=temperature, generator=gen)
        self.last_stats = {"steps": steps, "guidance": guidance, "nfe": est.rows, "calls": est.calls}
        return mel[0]

    @torch.inference_mode()
    def mel_to_wave(self, mel: torch.Tensor, wave: str | None = None, length: int | None = None) -> torch.Tensor:
        """Log-mel [n_mels, T] -> Tensor[T * hop] in [-1, 1], by the generator or Griffin-Lim."""
        wave = wave or ("istft" if self.generator is not None else "griffinlim")
        if wave not in WAVE_BACKENDS:
            raise ValueError(f"unknown wave backend '{wave}'; allowed: {', '.join(WAVE_BACKENDS)}")
        mel = mel.to(self.device)
        n = length if length is not None else mel.shape[-1] * self.mel_cfg.hop
        if wave == "istft":
            if self.generator is None:
                raise ValueError("this vocoder has no trained generator (vocoder.generator=griffinlim); "
                                 "use wave='griffinlim'")
            out = self.generator(mel[None], length=n)[0]
        else:
            if self._griffin_lim is None:
                self._griffin_lim = GriffinLimVocoder(self.mel_cfg, int(self.defaults["griffin_lim_iters"]))
            out = self._griffin_lim(mel.cpu(), length=n)
        return out.clamp(-1.0, 1.0).cpu()

    def decode(self, ling_codes: Sequence[int], sem_codes: Sequence[int], steps: int | None = None,
               guidance: float | None = None, seed: int | None = None, temperature: float = 1.0,
               wave: str | None = None) -> torch.Tensor:
        """(linguistic codes, semantic codes) -> 24 kHz waveform Tensor[samples] in [-1, 1].

        steps: Euler steps of the flow (default 10); guidance: classifier-free guidance
        strength (default: the artifact's, 0; 0 = one network evaluation per step); seed: of the
        starting noise, so equal inputs give equal audio; wave: "istft" (the trained
        generator, default when there is one) or "griffinlim".
        """
        t0 = time.perf_counter()
        mel = self.decode_mel(ling_codes, sem_codes, steps=steps, guidance=guidance, seed=seed,
                              temperature=temperature)
        wav = self.mel_to_wave(mel, wave=wave)
        secs = time.perf_counter() - t0
        self.last_stats.update(seconds=secs, audio_seconds=len(wav) / self.sample_rate,
                               rtf=secs / max(len(wav) / self.sample_rate, 1e-9),
                               wave=wave or ("istft" if self.generator is not None else "griffinlim"))
        return wav
