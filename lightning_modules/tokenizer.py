"""Training of the dual-codebook audio tokenizer (the nets live in ``aqaa.tokenizer``).

``TokenizerModule`` trains both encoders on the same batches: the linguistic one with
CTC, the semantic one with CTC before and after its VQ bottleneck plus feature and mel
reconstruction from the codes (see ``aqaa.tokenizer.model.SemanticTokenizer``).
``train_tokenizer`` runs it in an artifact's partial directory (resumable from the
Lightning checkpoint there), then fits the linguistic k-means codebook, saves the
tokenizer and measures it (CER, codebook usage and perplexity) on the test split.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from aqaa.config import ExperimentConfig, to_dict
from aqaa.tokenizer.audio_tokenizer import save_tokenizer
from aqaa.tokenizer.data import BucketBatchSampler, MelClips, collate_mels, corpus_clips
from aqaa.tokenizer.model import EncoderConfig, LinguisticTokenizer, SemanticConfig, SemanticTokenizer, config_dict
from aqaa.tokenizer.quantize import codebook_stats, fit_kmeans, nearest_centroid
from aqaa.tokenizer.text import cer, greedy_decode
from aqaa.tokenizer.threads import torch_threads

CKPT_DIR = "lightning"  # inside the partial dir; removed once the artifact is complete


class TrainingDiverged(RuntimeError):
    """The loss went NaN/inf; the last good checkpoint is kept for inspection or resuming."""


class TokenizerModule(L.LightningModule):
    def __init__(self, ling: dict, sem: dict, lr: float = 2e-3, warmup_steps: int = 50, max_steps: int = 600,
                 recon_weight: float = 1.0, enc_ctc_weight: float = 1.0, feat_weight: float = 1.0,
                 weight_decay: float = 0.01, usage_window: int = 50):
        super().__init__()
        self.save_hyperparameters()
        self.ling = LinguisticTokenizer(EncoderConfig(**ling))
        self.sem = SemanticTokenizer(SemanticConfig(**sem))
        self._usage = torch.zeros(self.sem.cfg.n_codes)  # semantic code counts since the last report
        self._val: dict = {}

    def set_mel_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        for net in (self.ling, self.sem):
            net.mel_mean.copy_(mean)
            net.mel_std.copy_(std)

    def _step(self, batch: dict) -> tuple[torch.Tensor, dict, dict, dict]:
        args = (batch["mel"], batch["n_samples"], batch["targets"], batch["target_lengths"])
        lo, so = self.ling(*args), self.sem(*args)
        hp = self.hparams
        loss = (lo["loss"] + so["ctc"] + hp.enc_ctc_weight * so["ctc_enc"] + hp.feat_weight * so["feat"]
                + hp.recon_weight * so["recon"] + so["commit"])
        parts = {"loss": loss.detach(), "ctc_ling": lo["ctc"], "ctc_sem": so["ctc"].detach(),
                 "ctc_sem_encoder": so["ctc_enc"].detach(), "sem_feature": so["feat"].detach(),
                 "recon": so["recon"].detach(), "vq_commit": so["commit"].detach()}
        return loss, parts, lo, so

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, parts, _, so = self._step(batch)
        B = len(batch["n_samples"])
        self.log_dict({f"train/{k}": v for k, v in parts.items()}, batch_size=B)
        self.log("loss", parts["loss"], prog_bar=True, logger=False, batch_size=B)
        codes = so["codes"][so["mask"]].cpu()
        counts = torch.bincount(codes, minlength=self.sem.cfg.n_codes).float()
        self._usage += counts
        self.log("train/sem_perplexity_batch", codebook_stats(counts)["perplexity"], batch_size=B)
        if (self.global_step + 1) % self.hparams.usage_window == 0 and self.logger is not None:
            # Straight to the logger: a window need not line up with log_every_n_steps.
            st = codebook_stats(self._usage)
            self.logger.log_metrics({"train/sem_usage": st["usage"], "train/sem_perplexity": st["perplexity"],
                                     "train/sem_live_codes": self.sem.vq.live_codes(),
                                     "train/sem_restarts": int(self.sem.vq.restarts)}, step=self.global_step)
            self._usage.zero_()
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = {"refs": [], "ling": [], "sem": [], "codes": torch.zeros(self.sem.cfg.n_codes)}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        _, parts, lo, so = self._step(batch)
        self.log_dict({f"val/{k}": v for k, v in parts.items()}, batch_size=len(batch["n_samples"]))
        self._val["refs"] += batch["texts"]
        self._val["ling"] += greedy_decode(lo["logp"], lo["logp_lengths"])
        self._val["sem"] += greedy_decode(so["logp"], so["logp_lengths"])
        self._val["codes"] += torch.bincount(so["codes"][so["mask"]].cpu(), minlength=self.sem.cfg.n_codes).float()

    def on_validation_epoch_end(self) -> None:
        v = self._val
        st = codebook_stats(v["codes"])
        self.log_dict({"val/cer_ling": cer(v["refs"], v["ling"]), "val/cer_sem": cer(v["refs"], v["sem"]),
                       "val/sem_usage": st["usage"], "val/sem_perplexity": st["perplexity"]})

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        warm, total = max(1, self.hparams.warmup_steps), max(1, self.hparams.max_steps)

        def schedule(step: int) -> float:  # linear warm-up, cosine decay to 10 %
            if step < warm:
                return (step + 1) / warm
            t = min(1.0, (step - warm) / max(1, total - warm))
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class StopOnNonFiniteLoss(Callback):
    """Stop with a clear message before a NaN/inf loss reaches the weights (no backward,
    no optimizer step), so the last checkpoint on disk stays the last good one."""

    def __init__(self, ckpt_dir: Path):
        self.ckpt_dir = Path(ckpt_dir)

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss).all():
            last = self.ckpt_dir / "last.ckpt"
            kept = f"the last good checkpoint is kept at {last}" if last.exists() else "no checkpoint was written yet"
            raise TrainingDiverged(
                f"tokenizer: loss became {loss.item()} at step {trainer.global_step}; training stopped "
                f"before the update; {kept}. Try a lower tokenizer.lr (now {pl_module.hparams.lr}) or more "
                "tokenizer.warmup_steps; rerunning resumes from that checkpoint."
            )


def net_configs(cfg: ExperimentConfig) -> tuple[EncoderConfig, SemanticConfig]:
    tk = cfg.tokenizer
    common = dict(d_model=tk.d_model, n_heads=tk.n_heads, n_layers=tk.n_layers, dropout=tk.dropout)
    ling = EncoderConfig(n_codes=cfg.audio_tokens.n_linguistic, **common)
    sem = SemanticConfig(n_codes=cfg.audio_tokens.n_semantic, vq_dim=tk.vq_dim, vq_decay=tk.vq_decay,
                         vq_commitment=tk.vq_commitment, vq_warmup=tk.vq_warmup, **common)
    return ling, sem


def _loader(ds: MelClips, batch_size: int, seed: int, shuffle: bool) -> DataLoader:
    sampler = BucketBatchSampler([it[0].shape[0] for it in ds.items], batch_size, seed=seed, shuffle=shuffle)
    return DataLoader(ds, batch_sampler=sampler, collate_fn=collate_mels, num_workers=0)


@torch.no_grad()
def measure(module: TokenizerModule, ds: MelClips, batch_size: int = 32) -> dict:
    """Codebook usage / perplexity of both codebooks and CER of both CTC heads on ``ds``."""
    module.eval()
    ling, sem = module.ling, module.sem
    lc, sc = torch.zeros(ling.cfg.n_codes), torch.zeros(sem.cfg.n_codes)
    refs, hyp_l, hyp_s = [], [], []
    for batch in _loader(ds, batch_size, 0, shuffle=False):
        mel, n = batch["mel"], batch["n_samples"]
        h, lengths, mask = ling.encode(mel, n)
        hyp_l += greedy_decode(*ling.ctc_logits(h, lengths))
        codes = nearest_centroid(h[mask], ling.codebook)
        lc += torch.bincount(codes, minlength=ling.cfg.n_codes).float()
        zq, scodes, _, slen, smask, _ = sem.quantize(mel, n)
        g, _ = sem.heads(zq, slen, smask)
        hyp_s += greedy_decode(*sem.ctc_logits(g, slen))
        sc += torch.bincount(scodes[smask], minlength=sem.cfg.n_codes).float()
        refs += batch["texts"]
    return {"clips": len(ds), "seconds": round(ds.seconds, 1),
            "cer_linguistic": cer(refs, hyp_l), "cer_semantic": cer(refs, hyp_s),
            "linguistic": codebook_stats(lc), "semantic": codebook_stats(sc),
            "examples": [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyp_l))[:5]]}


@torch.no_grad()
def linguistic_features(net: LinguisticTokenizer, ds: MelClips, batch_size: int = 32) -> torch.Tensor:
    net.eval()
    out = []
    for batch in _loader(ds, batch_size, 0, shuffle=False):
        h, _, mask = net.encode(batch["mel"], batch["n_samples"])
        out.append(h[mask])
    return torch.cat(out)


def train_tokenizer(
    cfg: ExperimentConfig,
    corpus_dir: Path,
    work: Path,
    version: str,
    callbacks: list[Callback] = (),
    progress: bool = True,
    log=print,
) -> dict:
    """Train, quantise, save and measure the tokenizer into ``work``; returns its metrics.

    Resumes from ``work/lightning/last.ckpt`` when an earlier run was interrupted.
    """
    with torch_threads(cfg.tokenizer.threads):
        return _train(cfg, corpus_dir, work, version, list(callbacks), progress, log)


def _train(cfg: ExperimentConfig, corpus_dir: Path, work: Path, version: str, callbacks: list[Callback],
           progress: bool, log) -> dict:
    tk = cfg.tokenizer
    t0 = time.perf_counter()
    L.seed_everything(tk.seed, verbose=False)
    train_ds = MelClips(corpus_clips(corpus_dir, "train"), progress=progress, desc="log-mel train")
    val_ds = MelClips(corpus_clips(corpus_dir, "val", with_pairs=False), progress=progress, desc="log-mel val")
    test_ds = MelClips(corpus_clips(corpus_dir, "test", with_pairs=False), progress=progress, desc="log-mel test")
    if len(train_ds) == 0:
        raise ValueError(f"{corpus_dir}/train.jsonl: no clips with audio and text to train the tokenizer on")
    log(f"tokenizer: {len(train_ds)} training clips ({train_ds.seconds / 60:.1f} min of audio), "
        f"{len(val_ds)} val, {len(test_ds)} test; {torch.get_num_threads()} threads")

    ling_cfg, sem_cfg = net_configs(cfg)
    module = TokenizerModule(config_dict(ling_cfg), config_dict(sem_cfg), lr=tk.lr, warmup_steps=tk.warmup_steps,
                             max_steps=tk.max_steps, recon_weight=tk.recon_weight,
                             usage_window=max(1, min(50, tk.max_steps // 2)))
    module.set_mel_stats(*train_ds.mel_stats())

    ckpt_dir = work / CKPT_DIR
    last = ckpt_dir / "last.ckpt"
    resume = last if last.exists() else None
    if resume:
        step = torch.load(last, map_location="cpu", weights_only=True).get("global_step", "?")
        log(f"tokenizer: resuming from {last} (step {step})")
    trainer = L.Trainer(
        accelerator="gpu" if torch.cuda.is_available() else "cpu",  # not "auto": CTC has no MPS kernel
        devices=1,
        max_steps=tk.max_steps,
        max_epochs=-1,
        logger=TensorBoardLogger(cfg.paths.runs, name="tokenizer", version=version, default_hp_metric=False),
        callbacks=[
            ModelCheckpoint(dirpath=ckpt_dir, filename="step{step}", save_last=True, save_top_k=1,
                            every_n_train_steps=tk.ckpt_every, auto_insert_metric_name=False),
            StopOnNonFiniteLoss(ckpt_dir),
            *callbacks,
        ],
        val_check_interval=min(tk.val_every, tk.max_steps) if len(val_ds) else None,
        check_val_every_n_epoch=None,
        limit_val_batches=1.0 if len(val_ds) else 0,
        num_sanity_val_steps=0,
        gradient_clip_val=1.0,
        log_every_n_steps=min(10, tk.max_steps),
        enable_progress_bar=progress,
        enable_model_summary=False,
        default_root_dir=str(work),
    )
    val_dl = _loader(val_ds, tk.batch_size, 0, shuffle=False) if len(val_ds) else None
    trainer.fit(module, _loader(train_ds, tk.batch_size, tk.seed, shuffle=True), val_dl, ckpt_path=resume)
    if trainer.global_step < tk.max_steps:
        raise RuntimeError(f"tokenizer training stopped at step {trainer.global_step} of {tk.max_steps} "
                           f"({trainer.state.status}); rerun to resume from {last}")
    t_train = time.perf_counter() - t0

    # Step-Audio's recipe: the linguistic codebook is k-means over the trained encoder's features.
    module.cpu()
    t1 = time.perf_counter()
    feats = linguistic_features(module.ling, train_ds)
    module.ling.codebook.copy_(fit_kmeans(feats, ling_cfg.n_codes, seed=tk.seed, log=log))
    t_kmeans = time.perf_counter() - t1

    metrics = {
        "steps": trainer.global_step,
        "threads": torch.get_num_threads(),
        "train_seconds": round(t_train, 1),
        "kmeans_seconds": round(t_kmeans, 1),
        "kmeans_frames": len(feats),
        "params": {"linguistic": sum(p.numel() for p in module.ling.parameters()),
                   "semantic": sum(p.numel() for p in module.sem.parameters())},
        "train": measure(module, train_ds),
        "test": measure(module, test_ds) if len(test_ds) else None,
    }
    save_tokenizer(work, module.ling, module.sem, extra={"trained_steps": trainer.global_step})
    (work / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    _log_final(trainer, cfg, metrics)
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # only needed to resume; the artifact holds state dicts
    return metrics


def _log_final(trainer: L.Trainer, cfg: ExperimentConfig, metrics: dict) -> None:
    """Final figures (both codebooks, after k-means) as TensorBoard scalars and hparams."""
    if trainer.logger is None:
        return
    final = {}
    for split in ("train", "test"):
        m = metrics.get(split)
        if not m:
            continue
        for book in ("linguistic", "semantic"):
            final[f"codebook/{book}_usage_{split}"] = m[book]["usage"]
            final[f"codebook/{book}_perplexity_{split}"] = m[book]["perplexity"]
        final[f"final/cer_linguistic_{split}"] = m["cer_linguistic"]
        final[f"final/cer_semantic_{split}"] = m["cer_semantic"]
    trainer.logger.log_metrics(final, step=metrics["steps"])
    params = {f"tokenizer/{k}": v for k, v in to_dict(cfg.tokenizer).items()}
    params.update({f"audio_tokens/{k}": v for k, v in to_dict(cfg.audio_tokens).items()})
    trainer.logger.log_hyperparams(params, {k: v for k, v in final.items() if not math.isnan(v)})
    trainer.logger.save()
