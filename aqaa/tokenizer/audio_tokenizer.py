"""``AudioTokenizer``: the trained pair of tokenizers behind the interface a pretrained
one would have (DESIGN.md section 9).

An artifact directory holds ``tokenizer.json`` (the nets' configs, rates, alphabet) and
two state dicts, ``linguistic.pt`` and ``semantic.pt`` (torch.save; loaded with
``weights_only=True``). Each net carries its own log-mel front end and normalisation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
import torchaudio

from ..audio import as_tensor
from .model import SAMPLE_RATE, EncoderConfig, LinguisticTokenizer, SemanticConfig, SemanticTokenizer, config_dict
from .text import CHARS, greedy_decode

FORMAT_VERSION = 1
CONFIG_FILE = "tokenizer.json"
LING_FILE = "linguistic.pt"
SEM_FILE = "semantic.pt"


def save_tokenizer(out_dir: str | Path, ling: LinguisticTokenizer, sem: SemanticTokenizer, extra: dict | None = None) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in ling.state_dict().items()}, out_dir / LING_FILE)
    torch.save({k: v.detach().cpu() for k, v in sem.state_dict().items()}, out_dir / SEM_FILE)
    meta = {
        "format_version": FORMAT_VERSION,
        "sample_rate": SAMPLE_RATE,
        "chars": CHARS,
        "linguistic": {"hop": ling.cfg.hop, "rate_hz": SAMPLE_RATE / ling.cfg.hop, "config": config_dict(ling.cfg)},
        "semantic": {"hop": sem.cfg.hop, "rate_hz": SAMPLE_RATE / sem.cfg.hop, "config": config_dict(sem.cfg)},
        **(extra or {}),
    }
    (out_dir / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")


class AudioTokenizer:
    """Waveform -> (linguistic codes at 16.67 Hz, semantic codes at 25 Hz); and -> text.

    >>> tok = AudioTokenizer.load(artifact_dir)
    >>> ling, sem = tok.encode(wav, 22050)   # any rate; resampled to 16 kHz
    >>> tok.transcribe(wav, 22050)           # greedy CTC of the linguistic encoder
    """

    def __init__(self, ling: LinguisticTokenizer, sem: SemanticTokenizer, meta: dict | None = None, device: str = "cpu"):
        self.device = torch.device(device)
        self.ling = ling.to(self.device).eval()
        self.sem = sem.to(self.device).eval()
        self.meta = meta or {}
        # Both nets read the same log-mel; compute it once when their front ends agree.
        self._shared_mel = ling.cfg.n_mels == sem.cfg.n_mels
        self._resamplers: dict[int, torch.nn.Module] = {}

    # ----- loading ---------------------------------------------------------------------
    @classmethod
    def load(cls, artifact_dir: str | Path, device: str = "cpu") -> "AudioTokenizer":
        d = Path(artifact_dir)
        cfg_path = d / CONFIG_FILE
        if not cfg_path.is_file():
            raise FileNotFoundError(f"no {CONFIG_FILE} in {d}: is it a tokenizer artifact (aqaa train tokenizer)?")
        meta = json.loads(cfg_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{cfg_path}: format_version {meta.get('format_version')} is not {FORMAT_VERSION}")
        try:
            ling = LinguisticTokenizer(EncoderConfig(**meta["linguistic"]["config"]))
            sem = SemanticTokenizer(SemanticConfig(**meta["semantic"]["config"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"{cfg_path}: not a tokenizer config this code can read ({e}); retrain it "
                             "with `aqaa train tokenizer --force`") from e
        for net, name in ((ling, LING_FILE), (sem, SEM_FILE)):
            path = d / name
            if not path.is_file():
                raise FileNotFoundError(f"tokenizer weights missing: {path}")
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return cls(ling, sem, meta, device)

    # ----- properties ------------------------------------------------------------------
    @property
    def n_linguistic(self) -> int:
        return self.ling.cfg.n_codes

    @property
    def n_semantic(self) -> int:
        return self.sem.cfg.n_codes

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    @property
    def linguistic_hop(self) -> int:
        return self.ling.cfg.hop  # 960 samples at 16 kHz: 16.67 Hz

    @property
    def semantic_hop(self) -> int:
        return self.sem.cfg.hop  # 640 samples at 16 kHz: 25 Hz

    # ----- encoding --------------------------------------------------------------------
    def _to_16k(self, wav, sample_rate: int) -> torch.Tensor:
        wav = as_tensor(wav)
        if wav.dim() != 1:
            raise ValueError(f"expected a mono waveform [samples], got shape {tuple(wav.shape)}")
        if int(sample_rate) <= 0:
            raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
        sr = int(sample_rate)
        if sr == SAMPLE_RATE:
            return wav
        # transforms.Resample = functional.resample with its sinc kernel built once per rate
        # (building it dominates the cost at 22.05 kHz: gcd 50 gives a 320-phase kernel).
        if sr not in self._resamplers:
            self._resamplers[sr] = torchaudio.transforms.Resample(sr, SAMPLE_RATE)
        return self._resamplers[sr](wav)

    def _batches(self, waves: list[torch.Tensor], batch_size: int):
        """Index groups of similar length (less padding), longest first."""
        order = sorted(range(len(waves)), key=lambda i: -len(waves[i]))
        for k in range(0, len(order), batch_size):
            yield order[k : k + batch_size]

    def _pad(self, waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        n = torch.tensor([len(w) for w in waves], dtype=torch.long)
        x = torch.zeros(len(waves), int(n.max()))
        for k, w in enumerate(waves):
            x[k, : len(w)] = w
        return x.to(self.device), n.to(self.device)

    def _mels(self, waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x, n = self._pad(waves)
        return self.ling.frontend(x, n)[0], n

    @torch.inference_mode()
    def encode_batch(
        self, wavs: Sequence, sample_rate: int | Sequence[int], batch_size: int = 32
    ) -> list[tuple[list[int], list[int]]]:
        """``encode`` for many clips at once (batched by length; same codes as one by one)."""
        rates = [sample_rate] * len(wavs) if isinstance(sample_rate, (int, float)) else list(sample_rate)
        if len(rates) != len(wavs):
            raise ValueError(f"{len(wavs)} waveforms but {len(rates)} sample rates")
        waves = [self._to_16k(w, r) for w, r in zip(wavs, rates)]
        out: list[tuple[list[int], list[int]] | None] = [None] * len(waves)
        for idx in self._batches(waves, batch_size):
            live = [i for i in idx if len(waves[i]) > 0]
            for i in idx:
                if len(waves[i]) == 0:
                    out[i] = ([], [])
            if not live:
                continue
            mel, n = self._mels([waves[i] for i in live])
            lc, ll = self.ling.tokenize(mel, n)
            sem_mel = mel if self._shared_mel else self.sem.frontend(*self._pad([waves[i] for i in live]))[0]
            sc, sl = self.sem.tokenize(sem_mel, n)
            lc, ll, sc, sl = lc.cpu(), ll.cpu(), sc.cpu(), sl.cpu()
            for k, i in enumerate(live):
                out[i] = (lc[k, : ll[k]].tolist(), sc[k, : sl[k]].tolist())
        return out  # type: ignore[return-value]

    def encode(self, wav, sample_rate: int) -> tuple[list[int], list[int]]:
        """One mono waveform at any rate -> (linguistic codes, semantic codes).

        round(samples_16k / 960) linguistic and round(samples_16k / 640) semantic codes
        (16.67 and 25 per second of audio).
        """
        return self.encode_batch([wav], sample_rate, batch_size=1)[0]

    # ----- recognition -----------------------------------------------------------------
    @torch.inference_mode()
    def transcribe_batch(self, wavs: Sequence, sample_rate: int | Sequence[int], batch_size: int = 32) -> list[str]:
        """Greedy CTC decode of the linguistic encoder: the suite's own recogniser."""
        rates = [sample_rate] * len(wavs) if isinstance(sample_rate, (int, float)) else list(sample_rate)
        waves = [self._to_16k(w, r) for w, r in zip(wavs, rates)]
        out = [""] * len(waves)
        for idx in self._batches(waves, batch_size):
            live = [i for i in idx if len(waves[i]) > 0]
            if not live:
                continue
            mel, n = self._mels([waves[i] for i in live])
            h, lengths, _ = self.ling.encode(mel, n)
            logp, lp_len = self.ling.ctc_logits(h, lengths)
            for i, text in zip(live, greedy_decode(logp, lp_len)):
                out[i] = text
        return out

    def transcribe(self, wav, sample_rate: int) -> str:
        return self.transcribe_batch([wav], sample_rate, batch_size=1)[0]
