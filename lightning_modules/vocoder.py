"""Training of the vocoder (the nets live in ``aqaa.vocoder``).

Two thin LightningModules, trained one after the other in the artifact's partial
directory by ``train_vocoder``:

1. ``GeneratorModule``: mel -> wave on ground-truth mels of the assistant's 24 kHz
   answers (mel L1 + multi-resolution STFT). Skipped with ``vocoder.generator=griffinlim``.
2. ``FlowModule``: tokens -> mel by conditional flow matching (+ the encoder's prior loss).
   Trained second so its validation audio goes through the trained generator.

Each phase resumes from its Lightning checkpoint (``lightning/<phase>/last.ckpt``); a
finished phase leaves its state dict (``generator.pt``) so a rerun goes straight on.
Audio samples and losses go to TensorBoard under ``paths.runs/vocoder/<artifact>/``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from aqaa.config import ExperimentConfig, VocoderConfig
from aqaa.vocoder.data import (FRAMES_PER_GROUP, Clip, FlowCrops, WaveCrops, code_vectors, collate_flow, load_clips,
                               mel_stats)
from aqaa.vocoder.flow import FlowConfig, TokenToMel
from aqaa.vocoder.generator import Generator, GeneratorConfig, GeneratorLoss
from aqaa.vocoder.mel import GriffinLimVocoder, LogMel, MelConfig
from aqaa.vocoder.vocoder import GENERATOR_FILE, save_vocoder

CKPT_DIR = "lightning"  # inside the partial dir; removed once the artifact is complete
VAL_CLIPS = 8  # validation decodes whole clips through the ODE: a few are enough to follow training


class TrainingDiverged(RuntimeError):
    """The loss went NaN/inf; the last good checkpoint is kept for inspection or resuming."""


def _schedule(warmup: int, total: int):
    warm, total = max(1, warmup), max(1, total)

    def f(step: int) -> float:  # linear warm-up, cosine decay to 10 %
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    return f


def _optim(module: L.LightningModule, lr: float, warmup: int, total: int):
    opt = torch.optim.AdamW(module.parameters(), lr=lr, betas=(0.8, 0.99), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(warmup, total))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _add_audio(module: L.LightningModule, tag: str, wav: torch.Tensor, sr: int) -> None:
    tb = getattr(module.logger, "experiment", None) if module.logger else None
    if tb is not None and hasattr(tb, "add_audio"):
        tb.add_audio(tag, wav.clamp(-1, 1)[None].cpu(), module.global_step, sample_rate=sr)


class GeneratorModule(L.LightningModule):
    def __init__(self, generator: dict, mel: dict, lr: float = 2e-3, warmup_steps: int = 50, max_steps: int = 1500,
                 log_audio: int = 2):
        super().__init__()
        self.save_hyperparameters()
        self.mel_cfg = MelConfig(**mel)
        self.generator = Generator(GeneratorConfig(**generator))
        self.logmel = LogMel(self.mel_cfg)
        self.criterion = GeneratorLoss(self.mel_cfg)
        self._val_clips: list[Clip] = []

    def training_step(self, wav: torch.Tensor, batch_idx: int) -> torch.Tensor:
        with torch.no_grad():
            mel = self.logmel(wav)
        out = self.criterion(self.generator(mel, length=wav.shape[-1]), wav)
        self.log_dict({f"gen/train_{k}": v.detach() for k, v in out.items()}, batch_size=len(wav))
        self.log("loss", out["loss"].detach(), prog_bar=True, logger=False, batch_size=len(wav))
        return out["loss"]

    def validation_step(self, clip_idx: torch.Tensor, batch_idx: int) -> None:
        c = self._val_clips[int(clip_idx)]
        n = len(c.wav) // self.mel_cfg.hop * self.mel_cfg.hop  # whole frames: n / hop + 1 mel frames
        mel = self.logmel(c.wav[:n])
        wav = self.generator(mel[None], length=n)[0]
        l1 = (self.logmel(wav) - mel).abs().mean()
        self.log("gen/val_mel_l1", l1, batch_size=1)
        if batch_idx < self.hparams.log_audio:
            _add_audio(self, f"generator/{c.id}", wav, self.mel_cfg.sample_rate)
            if self.global_step <= self.trainer.val_check_interval:  # the reference, once
                _add_audio(self, f"ground_truth/{c.id}", c.wav[:n], self.mel_cfg.sample_rate)

    def configure_optimizers(self):
        return _optim(self, self.hparams.lr, self.hparams.warmup_steps, self.hparams.max_steps)


class FlowModule(L.LightningModule):
    def __init__(self, flow: dict, mel: dict, lr: float = 2e-3, warmup_steps: int = 50, max_steps: int = 1500,
                 prior_weight: float = 1.0, steps: int = 10, guidance: float = 0.0, log_audio: int = 2):
        super().__init__()
        self.save_hyperparameters()
        self.mel_cfg = MelConfig(**mel)
        self.flow = TokenToMel(FlowConfig(**flow))
        self._val_clips: list[Clip] = []
        self.wave = None  # set by train_vocoder: the trained generator, or Griffin-Lim

    def set_mel_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.flow.mel_mean.copy_(mean)
        self.flow.mel_std.copy_(std)

    def set_code_vectors(self, ling: torch.Tensor, sem: torch.Tensor) -> None:
        self.flow.encoder.ling.set_vectors(ling)
        self.flow.encoder.sem.set_vectors(sem)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.flow.loss(batch["ling"], batch["sem"], batch["mel"], batch["mask"])
        loss = out["cfm"] + self.hparams.prior_weight * out["prior"]
        B = len(batch["ling"])
        self.log_dict({"flow/train_cfm": out["cfm"].detach(), "flow/train_prior": out["prior"].detach(),
                       "flow/train_loss": loss.detach()}, batch_size=B)
        self.log("loss", loss.detach(), prog_bar=True, logger=False, batch_size=B)
        return loss

    def validation_step(self, clip_idx: torch.Tensor, batch_idx: int) -> None:
        c = self._val_clips[int(clip_idx)]
        mask = torch.ones(1, 1, c.mel.shape[1])
        g = torch.Generator().manual_seed(0)
        mel, mu = self.flow.sample(c.ling[None], c.sem[None], mask, steps=self.hparams.steps,
                                   guidance=self.hparams.guidance, generator=g, return_mu=True)
        self.log_dict({"flow/val_mel_l1": (mel[0] - c.mel).abs().mean(),
                       "flow/val_prior_mel_l1": (mu[0] - c.mel).abs().mean()}, batch_size=1)
        if batch_idx < self.hparams.log_audio and self.wave is not None:
            _add_audio(self, f"vocoder/{c.id}", self.wave(mel), self.mel_cfg.sample_rate)

    def configure_optimizers(self):
        return _optim(self, self.hparams.lr, self.hparams.warmup_steps, self.hparams.max_steps)


class StopOnNonFiniteLoss(Callback):
    """Stop with a clear message before a NaN/inf loss reaches the weights (no backward,
    no optimizer step), so the last checkpoint on disk stays the last good one."""

    def __init__(self, ckpt_dir: Path, phase: str, lr_key: str):
        self.ckpt_dir, self.phase, self.lr_key = Path(ckpt_dir), phase, lr_key

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss).all():
            last = self.ckpt_dir / "last.ckpt"
            kept = f"the last good checkpoint is kept at {last}" if last.exists() else "no checkpoint was written yet"
            raise TrainingDiverged(
                f"vocoder {self.phase}: loss became {loss.item()} at step {trainer.global_step}; training stopped "
                f"before the update; {kept}. Try a lower {self.lr_key} (now {pl_module.hparams.lr}) or more "
                "vocoder.warmup_steps; rerunning resumes from that checkpoint."
            )


# ----- orchestration --------------------------------------------------------------------


def mel_config(vc: VocoderConfig) -> MelConfig:
    return MelConfig(n_mels=vc.n_mels)


def flow_config(cfg: ExperimentConfig, vectors: tuple[torch.Tensor, torch.Tensor] | None = None) -> FlowConfig:
    vc = cfg.vocoder
    return FlowConfig(n_linguistic=cfg.audio_tokens.n_linguistic, n_semantic=cfg.audio_tokens.n_semantic,
                      n_mels=vc.n_mels, d_enc=vc.d_enc, ling_vec_dim=vectors[0].shape[1] if vectors else 0,
                      sem_vec_dim=vectors[1].shape[1] if vectors else 0, enc_res_blocks=vc.enc_res_blocks, enc_layers=vc.enc_layers,
                      n_heads=vc.n_heads, channels=list(vc.channels), transformers=list(vc.transformers),
                      n_mid=vc.n_mid, sigma_min=vc.sigma_min, cond_dropout=vc.cond_dropout)


def generator_config(vc: VocoderConfig) -> GeneratorConfig:
    m = mel_config(vc)
    return GeneratorConfig(n_mels=vc.n_mels, dim=vc.gen_dim, intermediate=3 * vc.gen_dim, n_layers=vc.gen_layers,
                           n_fft=m.n_fft, hop=m.hop)


class _Indices(torch.utils.data.Dataset):
    """Validation runs clip by clip (whole clips, no padding): the loader yields indices."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _trainer(cfg: ExperimentConfig, phase: str, max_steps: int, ckpt_dir: Path, version: str, n_val: int,
             callbacks: list, progress: bool, work: Path) -> L.Trainer:
    vc = cfg.vocoder
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        max_epochs=-1,
        logger=TensorBoardLogger(cfg.paths.runs, name="vocoder", version=version, sub_dir=phase,
                                 default_hp_metric=False),
        callbacks=[
            ModelCheckpoint(dirpath=ckpt_dir, filename="step{step}", save_last=True, save_top_k=1,
                            every_n_train_steps=vc.ckpt_every, auto_insert_metric_name=False),
            StopOnNonFiniteLoss(ckpt_dir, phase, "vocoder.flow_lr" if phase == "flow" else "vocoder.gen_lr"),
            *callbacks,
        ],
        val_check_interval=min(vc.val_every, max_steps) if n_val else None,
        check_val_every_n_epoch=None,
        limit_val_batches=1.0 if n_val else 0,
        num_sanity_val_steps=0,
        gradient_clip_val=1.0,
        log_every_n_steps=min(10, max_steps),
        enable_progress_bar=progress,
        enable_model_summary=False,
        default_root_dir=str(work),
    )


def _fit(trainer: L.Trainer, module: L.LightningModule, train: DataLoader, val: DataLoader | None, ckpt_dir: Path,
         max_steps: int, phase: str, log) -> float:
    last = ckpt_dir / "last.ckpt"
    resume = last if last.exists() else None
    if resume:
        step = torch.load(last, map_location="cpu", weights_only=True).get("global_step", "?")
        log(f"vocoder {phase}: resuming from {last} (step {step})")
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.fit(module, train, val, ckpt_path=resume)
    if trainer.global_step < max_steps:
        raise RuntimeError(f"vocoder {phase} training stopped at step {trainer.global_step} of {max_steps} "
                           f"({trainer.state.status}); rerun to resume from {last}")
    return time.perf_counter() - t0, time.process_time() - c0


def train_vocoder(
    cfg: ExperimentConfig,
    corpus_dir: Path,
    tokens_dir: Path,
    work: Path,
    version: str,
    tokenizer_dir: Path | None = None,
    callbacks: list[Callback] = (),
    progress: bool = True,
    log=print,
) -> dict:
    """Train generator then flow into ``work``, save the vocoder, return its metrics.

    ``tokenizer_dir`` supplies the code vectors (``vocoder.code_vectors``)."""
    vc = cfg.vocoder
    t_start, c_start = time.perf_counter(), time.process_time()
    mel_cfg = mel_config(vc)
    train = load_clips(corpus_dir, tokens_dir, "train", mel_cfg, progress=progress, with_pairs=vc.train_pairs)
    val = load_clips(corpus_dir, tokens_dir, "val", mel_cfg)[:VAL_CLIPS]
    if not train:
        raise ValueError(f"{corpus_dir}/train.jsonl: no answers with 24 kHz audio and codes to train the vocoder on")
    secs = sum(len(c.wav) for c in train) / mel_cfg.sample_rate
    log(f"vocoder: {len(train)} training answers ({secs / 60:.1f} min of 24 kHz audio), {len(val)} val")
    val_dl = DataLoader(_Indices(len(val)), batch_size=None) if val else None
    metrics: dict = {"train_clips": len(train), "train_audio_seconds": round(secs, 1)}
    # Checkpoints hold the data loaders' state too; the wave loader is rebuilt identically per phase.
    seed = vc.seed

    # 1. mel -> wave
    generator = None
    if vc.generator == "istft":
        gen_path = work / GENERATOR_FILE
        gcfg = generator_config(vc)
        if gen_path.is_file():
            generator = Generator(gcfg)
            generator.load_state_dict(torch.load(gen_path, map_location="cpu", weights_only=True))
            log(f"vocoder generator: already trained ({gen_path})")
            metrics["generator"] = json.loads((work / "generator_metrics.json").read_text())
        else:
            L.seed_everything(seed, verbose=False)
            module = GeneratorModule(asdict(gcfg), asdict(mel_cfg), lr=vc.gen_lr, warmup_steps=vc.warmup_steps,
                                     max_steps=vc.gen_max_steps, log_audio=vc.log_audio)
            module._val_clips = val
            segment = max(1, round(vc.gen_segment_s * mel_cfg.frame_rate)) * mel_cfg.hop
            dl = DataLoader(WaveCrops(train, segment), batch_size=vc.gen_batch, shuffle=True, drop_last=False)
            ckpt = work / CKPT_DIR / "generator"
            trainer = _trainer(cfg, "generator", vc.gen_max_steps, ckpt, version, len(val), list(callbacks),
                               progress, work)
            dt, cpu = _fit(trainer, module, dl, val_dl, ckpt, vc.gen_max_steps, "generator", log)
            generator = module.generator.eval()
            m = {"steps": trainer.global_step, "train_seconds": round(dt, 1), "cpu_seconds": round(cpu, 1),
                 "params": sum(p.numel() for p in generator.parameters()),
                 "val_mel_l1": _metric(trainer, "gen/val_mel_l1")}
            torch.save({k: v.detach().cpu() for k, v in generator.state_dict().items()}, gen_path)
            (work / "generator_metrics.json").write_text(json.dumps(m, indent=2) + "\n")
            metrics["generator"] = m
            log(f"vocoder generator: {m['steps']} steps in {dt:.0f} s")

    # 2. tokens -> mel
    L.seed_everything(seed, verbose=False)
    vectors = None
    if vc.code_vectors:
        if tokenizer_dir is None:
            raise ValueError("vocoder.code_vectors=true needs the tokenizer artifact (tokenizer_dir)")
        vectors = code_vectors(tokenizer_dir, log=log)
        sizes = (cfg.audio_tokens.n_linguistic, cfg.audio_tokens.n_semantic)
        if vectors is not None and (vectors[0].shape[0], vectors[1].shape[0]) != sizes:
            raise ValueError(f"tokenizer {tokenizer_dir} has {vectors[0].shape[0]} linguistic and "
                             f"{vectors[1].shape[0]} semantic codes, but audio_tokens says {sizes[0]} and {sizes[1]}")
    fcfg = flow_config(cfg, vectors)
    module = FlowModule(asdict(fcfg), asdict(mel_cfg), lr=vc.flow_lr, warmup_steps=vc.warmup_steps,
                        max_steps=vc.flow_max_steps, prior_weight=vc.prior_weight, steps=vc.steps,
                        guidance=vc.guidance, log_audio=vc.log_audio)
    module.set_mel_stats(*mel_stats(train))
    if vectors is not None:
        module.set_code_vectors(*vectors)
    module._val_clips = val
    griffin_lim = GriffinLimVocoder(mel_cfg, vc.griffin_lim_iters)
    if generator is not None:
        module.wave = lambda mel: generator(mel, length=mel.shape[-1] * mel_cfg.hop)[0]
    else:
        module.wave = lambda mel: griffin_lim(mel[0])
    crop_groups = max(1, round(vc.flow_crop_s * mel_cfg.frame_rate / FRAMES_PER_GROUP))
    dl = DataLoader(FlowCrops(train, crop_groups), batch_size=vc.flow_batch, shuffle=True, collate_fn=collate_flow)
    ckpt = work / CKPT_DIR / "flow"
    trainer = _trainer(cfg, "flow", vc.flow_max_steps, ckpt, version, len(val), list(callbacks), progress, work)
    dt, cpu = _fit(trainer, module, dl, val_dl, ckpt, vc.flow_max_steps, "flow", log)
    flow = module.flow.eval()
    metrics["flow"] = {"steps": trainer.global_step, "train_seconds": round(dt, 1), "cpu_seconds": round(cpu, 1),
                       "params": sum(p.numel() for p in flow.parameters()),
                       "val_mel_l1": _metric(trainer, "flow/val_mel_l1"),
                       "val_prior_mel_l1": _metric(trainer, "flow/val_prior_mel_l1")}
    log(f"vocoder flow: {trainer.global_step} steps in {dt:.0f} s")

    save_vocoder(work, flow, mel_cfg, generator,
                 defaults={"steps": vc.steps, "guidance": vc.guidance, "seed": 0,
                           "griffin_lim_iters": vc.griffin_lim_iters},
                 extra={"trained_steps": {"flow": metrics["flow"]["steps"],
                                          "generator": metrics.get("generator", {}).get("steps", 0)}})
    metrics["total_seconds"] = round(time.perf_counter() - t_start, 1)
    metrics["total_cpu_seconds"] = round(time.process_time() - c_start, 1)  # all threads; other jobs excluded
    (work / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (work / "generator_metrics.json").unlink(missing_ok=True)
    shutil.rmtree(work / CKPT_DIR, ignore_errors=True)  # only needed to resume; the artifact holds state dicts
    return metrics


def _metric(trainer: L.Trainer, key: str) -> float | None:
    v = trainer.callback_metrics.get(key)
    return round(float(v), 4) if v is not None else None
