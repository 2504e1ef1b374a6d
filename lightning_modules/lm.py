"""Backbone stages: pretrain, SFT phase 1 and phase 2 (one module; the data differ).

``LMModule`` trains ``aqaa.model.LM`` on ``aqaa.lm_data`` batches: cross-entropy on
the ids the batch marks as targets (every id after ``bos`` in pretrain, the response and
``eos`` in SFT), normalised by the global batch's target count, so one process and N
processes give the same loss and update. It logs loss, perplexity per id class
(text, audio, linguistic, semantic) and tokens/s; the model is built in
``configure_model`` (sharded with FSDP2 there under ``train.strategy=fsdp2``).

``train_lm`` runs one stage in an artifact's partial directory: validation before
training, fit (resuming from ``lightning/last.ckpt`` if an earlier run was interrupted),
validation after, then the final checkpoint consolidated into a plain ``model.pt``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from aqaa.config import ExperimentConfig, LMStageConfig
from aqaa.distributed import (apply_fsdp2, consolidate_checkpoint, load_full_state_dict, make_strategy,
                              resolve_accelerator, resolve_precision, strip_prefix)
from aqaa.lm_data import Example, class_sums, id_class_table, perplexities, target_ce
from aqaa.model import LM, ModelConfig, save_model
from aqaa.tokens import Vocab
from datamodules.lm import LMDataModule

CKPT_DIR = "lightning"  # inside the partial dir; removed once the artifact is complete


class TrainingDiverged(RuntimeError):
    """The loss went NaN/inf; the last good checkpoint is kept for inspection or resuming."""


class LMModule(L.LightningModule):
    def __init__(self, model_cfg: dict, vocab: dict, stage: str = "sft1", lr: float = 1e-3, warmup_steps: int = 20,
                 max_steps: int = 200, min_lr_ratio: float = 0.1, weight_decay: float = 0.1,
                 betas: tuple[float, float] = (0.9, 0.95), init_path: str | None = None,
                 fsdp_param_dtype: str | None = None, activation_checkpointing: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.model: LM | None = None  # built in configure_model
        self.vocab = Vocab(**vocab)
        self.register_buffer("id_class", id_class_table(self.vocab, model_cfg["vocab_size"]), persistent=False)
        self._val = torch.zeros(4, 2)
        # Kept in checkpoints so a resumed run reports the whole run.
        self.loss_history: list[float] = []
        self.val_history: list[dict] = []
        self.train_tokens = 0
        self.train_time = 0.0
        self._t0 = 0.0

    # ----- model ------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.model is not None:  # Lightning calls this for validate and again for fit
            return
        from lightning.pytorch.strategies import ModelParallelStrategy

        hp = self.hparams
        cfg = ModelConfig.from_dict(hp.model_cfg)
        strategy = self.trainer.strategy

        def load_init() -> dict:  # mmap: only the tensors touched are read
            return torch.load(hp.init_path, map_location="cpu", weights_only=True, mmap=True)

        if isinstance(strategy, ModelParallelStrategy):
            # FSDP2: build on the meta device, shard, then allocate only this rank's shards.
            with torch.device("meta"):
                model = LM(cfg)
            dtype = getattr(torch, hp.fsdp_param_dtype) if hp.fsdp_param_dtype else None
            apply_fsdp2(model, self.device_mesh["data_parallel"], param_dtype=dtype,
                        activation_checkpointing=hp.activation_checkpointing)
            model.to_empty(device=strategy.root_device)
            if hp.init_path is None:
                model.init_weights()  # each rank initialises its own shards
            else:  # rank 0 reads the full state dict and broadcasts it shard by shard
                load_full_state_dict(model, load_init() if strategy.global_rank == 0 else None)
            model.reset_parameters()  # RoPE tables
        else:
            model = LM(cfg)
            if hp.init_path is not None:
                model.load_state_dict(load_init())
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids)

    def _ce(self, batch: dict) -> torch.Tensor:
        return target_ce(self.model, batch["input_ids"], batch["labels"])

    # ----- training ---------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        ce = self._ce(batch)
        # Sum over this rank's targets / the global batch's target count, times the world
        # size because DDP / FSDP average gradients over ranks: the global mean, exactly.
        loss = ce.sum() * self.trainer.world_size / max(batch["n_loss_global"], 1)
        B = batch["input_ids"].size(0)
        global_loss = self.trainer.strategy.reduce(loss.detach(), reduce_op="mean")
        self.log("train/loss", global_loss, prog_bar=True, batch_size=B)
        sums = class_sums(ce.detach(), batch["labels"], self.id_class)  # this rank's share
        for k, v in perplexities(sums).items():
            if k != "loss" and not math.isnan(v):
                self.log(f"train/{k}", v, batch_size=B)
        self.loss_history.append(round(float(global_loss), 6))
        return loss

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        dt = time.perf_counter() - self._t0
        self.train_time += dt
        self.train_tokens += batch["n_tokens_global"]
        self.log("train/tokens_per_s", batch["n_tokens_global"] / max(dt, 1e-9), batch_size=1)

    # ----- validation -------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val = torch.zeros(4, 2, device=self.device)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._val += class_sums(self._ce(batch), batch["labels"], self.id_class)

    def on_validation_epoch_end(self) -> None:
        sums = self.trainer.strategy.reduce(self._val, reduce_op="sum")
        ppl = perplexities(sums.cpu())
        # Already summed over ranks: every rank holds the same values (sync_dist only averages equals).
        self.log_dict({f"val/{k}": v for k, v in ppl.items() if not math.isnan(v)}, sync_dist=True)
        self.val_history.append({"step": self.global_step, **ppl})

    # ----- optimisation -----------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]  # norms: no weight decay
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=hp.lr, betas=tuple(hp.betas))
        warm, total, floor = max(1, hp.warmup_steps), max(1, hp.max_steps), hp.min_lr_ratio

        def schedule(step: int) -> float:  # linear warm-up, cosine decay to lr * min_lr_ratio
            if step < warm:
                return (step + 1) / warm
            t = min(1.0, (step - warm) / max(1, total - warm))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ----- run state in checkpoints ---------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["aqaa_run"] = {"loss_history": self.loss_history, "val_history": self.val_history,
                                  "train_tokens": self.train_tokens, "train_time": self.train_time}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        run = checkpoint.get("aqaa_run", {})
        self.loss_history = list(run.get("loss_history", []))
        self.val_history = list(run.get("val_history", []))
        self.train_tokens = run.get("train_tokens", 0)
        self.train_time = run.get("train_time", 0.0)


class StopOnNonFiniteLoss(Callback):
    """Stop with a clear message before a NaN/inf loss reaches the weights (no backward, no
    optimizer step), so the last checkpoint on disk stays the last good one. All ranks
    agree (the flag is summed over them), so none is left waiting in a collective."""

    def __init__(self, stage: str, ckpt_dir: Path):
        self.stage, self.ckpt_dir = stage, Path(ckpt_dir)

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        bad = torch.tensor(0.0 if torch.isfinite(loss).all() else 1.0, device=loss.device)
        if float(trainer.strategy.reduce(bad, reduce_op="sum")) > 0:
            last = self.ckpt_dir / "last.ckpt"
            kept = f"the last good checkpoint is kept at {last}" if last.exists() else "no checkpoint was written yet"
            hp = pl_module.hparams
            raise TrainingDiverged(
                f"{self.stage}: loss became {loss.item()} at step {trainer.global_step}; training stopped before "
                f"the update; {kept}. Try a lower train.{self.stage}.lr (now {hp.lr}) or more "
                f"train.{self.stage}.warmup_steps (now {hp.warmup_steps}); rerunning resumes from that checkpoint."
            )


# ----- one stage, end to end -------------------------------------------------------------


def _plain_state_dict(full: dict, cfg: ModelConfig) -> dict:
    sd = strip_prefix(full, "model.")
    if cfg.tie_embeddings:  # one tensor under two names; a sharded save may keep either
        w = sd.get("embed.weight", sd.get("lm_head.weight"))
        sd["embed.weight"] = sd["lm_head.weight"] = w
    return sd


def train_lm(
    cfg: ExperimentConfig,
    stage: str,
    stage_cfg: LMStageConfig,
    model_cfg: ModelConfig,
    vocab: Vocab,
    train: Sequence[Example],
    val: Sequence[Example],
    work: Path,
    version: str,
    init_path: Path | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    extra_metrics: dict | None = None,
    commit=None,
    log=print,
) -> dict | None:
    """Train one backbone stage into ``work`` (model.pt, model_config.json, metrics.json).

    Returns the metrics on global rank 0 and None on the other ranks. ``commit(metrics)``
    runs on rank 0 before the final barrier, so no rank moves on (e.g. to the next stage,
    which reads this one's model.pt) before the artifact is in place. Resumes from
    ``work/lightning/last.ckpt`` when it exists.
    """
    tc = cfg.train
    accelerator = resolve_accelerator(tc)
    precision = resolve_precision(tc, accelerator)
    strategy = make_strategy(tc, accelerator, precision)
    fsdp_dtype = "bfloat16" if (tc.strategy == "fsdp2" and accelerator == "gpu" and "bf16" in precision) else None
    if tc.threads:
        torch.set_num_threads(tc.threads)
    L.seed_everything(stage_cfg.seed, verbose=False)
    hp = dict(model_cfg=model_cfg.to_dict(),
              vocab={"text_size": vocab.text_size, "n_linguistic": vocab.n_linguistic, "n_semantic": vocab.n_semantic},
              stage=stage, lr=stage_cfg.lr, warmup_steps=stage_cfg.warmup_steps, max_steps=stage_cfg.max_steps,
              min_lr_ratio=stage_cfg.min_lr_ratio, weight_decay=stage_cfg.weight_decay,
              init_path=str(init_path) if init_path else None, fsdp_param_dtype=fsdp_dtype,
              activation_checkpointing=tc.activation_checkpointing)
    module = LMModule(**hp)
    dm = LMDataModule(train, val, vocab.pad, stage_cfg.batch_tokens, seed=stage_cfg.seed)
    world = tc.devices * tc.num_nodes
    padding = dm.train_sampler(world, 0).padding_fraction()

    trainer = stage_trainer(cfg, stage, stage_cfg.max_steps, stage_cfg.val_every, bool(val), work, version,
                            accelerator, precision, strategy, callbacks, progress, log,
                            use_distributed_sampler=False)  # LMDataModule's sampler splits global batches over ranks
    before, after, wall = fit_with_validation(trainer, module, dm, work, stage, stage_cfg.max_steps, bool(val))

    def metrics_of(sd: dict) -> dict:
        hist = module.loss_history
        return {
            "stage": stage,
            "steps": trainer.global_step,
            "params": sum(v.numel() for k, v in sd.items() if not (model_cfg.tie_embeddings and k == "lm_head.weight")),
            "precision": precision,
            "strategy": tc.strategy,
            "world_size": trainer.world_size,
            "train_seconds": round(module.train_time, 1),
            "fit_wall_seconds": round(wall, 1),
            "train_tokens": module.train_tokens,
            "tokens_per_s": round(module.train_tokens / max(module.train_time, 1e-9), 1),
            "padding_fraction": round(padding, 4),
            "train_loss_final": round(sum(hist[-10:]) / max(len(hist[-10:]), 1), 4),
            "val_before": before,
            "val": after,
            "val_history": module.val_history,
            "train_loss_history": hist,
            **(extra_metrics or {}),
        }

    # What a consumer (chat, eval, merge) needs to decode: the vocabulary, the audio stream
    # and, after SFT, the response layout the model was trained on.
    extra = {"stage": stage, "vocab": hp["vocab"], "streams": cfg.tokenizer.streams}
    if stage != "pretrain":
        extra["layout"] = {"layout": cfg.layout.layout, "ratio": list(cfg.layout.ratio), "splice": cfg.layout.splice}
    hparams = {"stage": stage, "lr": stage_cfg.lr, "max_steps": stage_cfg.max_steps,
               "batch_tokens": stage_cfg.batch_tokens, "precision": precision}
    return save_stage(trainer, model_cfg, work, extra, metrics_of, hparams, after, commit)


# ----- shared by every backbone stage (pretrain, sft1, sft2 here; dpo in dpo.py) -------------
def stage_trainer(cfg: ExperimentConfig, name: str, max_steps: int, val_every: int, has_val: bool, work: Path,
                  version: str, accelerator: str, precision: str, strategy, callbacks: Sequence[Callback],
                  progress: bool, log=print, **trainer_kw) -> L.Trainer:
    """The Trainer of a backbone stage: step-based, validation every ``val_every`` steps, a
    resumable ``last.ckpt`` every ``train.ckpt_every`` steps, a stop on a non-finite loss."""
    tc = cfg.train
    ckpt_dir = Path(work) / CKPT_DIR
    if (ckpt_dir / "last.ckpt").exists():
        log(f"{name}: resuming from {ckpt_dir / 'last.ckpt'}")
    return L.Trainer(
        accelerator=accelerator, devices=tc.devices, num_nodes=tc.num_nodes, strategy=strategy, precision=precision,
        max_steps=max_steps, max_epochs=-1,
        logger=TensorBoardLogger(cfg.paths.runs, name=name, version=version, default_hp_metric=False),
        callbacks=[
            # last.ckpt only (save_top_k=0): all a resume needs, written once per ckpt_every steps.
            ModelCheckpoint(dirpath=ckpt_dir, filename="step{step}", save_last=True, save_top_k=0,
                            every_n_train_steps=tc.ckpt_every, auto_insert_metric_name=False),
            LearningRateMonitor(logging_interval="step"),
            StopOnNonFiniteLoss(name, ckpt_dir),
            *callbacks,
        ],
        val_check_interval=min(val_every, max_steps) if has_val else None,
        check_val_every_n_epoch=None, limit_val_batches=1.0 if has_val else 0, num_sanity_val_steps=0,
        gradient_clip_val=tc.grad_clip or None, log_every_n_steps=min(10, max_steps),
        enable_progress_bar=progress, enable_model_summary=False, default_root_dir=str(work), **trainer_kw,
    )


def fit_with_validation(trainer: L.Trainer, module: L.LightningModule, dm: L.LightningDataModule, work: Path,
                        name: str, max_steps: int, has_val: bool) -> tuple[dict | None, dict | None, float]:
    """Validate before training (the baseline the stage is judged against; kept across
    resumes), fit (from ``last.ckpt`` if an earlier run was interrupted), validate at the
    last step. Returns (validation before, validation after, fit wall seconds)."""
    before_file = Path(work) / "val_before.json"
    before = json.loads(before_file.read_text()) if before_file.exists() else None
    if before is None and has_val:
        trainer.validate(module, datamodule=dm, verbose=False)
        before = module.val_history.pop() if module.val_history else None
        if trainer.is_global_zero:
            before_file.write_text(json.dumps(before) + "\n")
    last = Path(work) / CKPT_DIR / "last.ckpt"
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=last if last.exists() else None)
    if trainer.global_step < max_steps:
        raise RuntimeError(f"{name}: training stopped at step {trainer.global_step} of {max_steps} "
                           f"({trainer.state.status}); rerun the same command to resume from {last}")
    wall = time.perf_counter() - t0
    if has_val and (not module.val_history or module.val_history[-1]["step"] != trainer.global_step):
        trainer.validate(module, datamodule=dm, verbose=False)
    return before, (module.val_history[-1] if has_val else None), wall


def save_stage(trainer: L.Trainer, model_cfg: ModelConfig, work: Path, extra: dict, metrics_of, hparams: dict,
               after: dict | None, commit=None) -> dict | None:
    """Consolidate the final (possibly sharded) checkpoint into a plain ``model.pt`` that the
    plain model loads strictly, write ``metrics.json`` (``metrics_of(state_dict)``) and the
    hparams against the final validation, drop the Lightning checkpoints (only a resume
    needs them) and ``commit(metrics)``; all on rank 0, before the final barrier, so no rank
    moves on (e.g. to the next stage, which reads this model.pt) before the artifact is in place.
    Returns the metrics on rank 0, None elsewhere."""
    ckpt_dir = Path(work) / CKPT_DIR
    final = ckpt_dir / "final.ckpt"
    trainer.save_checkpoint(final)  # collective: every rank writes its shard
    metrics = None
    if trainer.is_global_zero:
        sd = _plain_state_dict(consolidate_checkpoint(final), model_cfg)
        with torch.device("meta"):  # the plain model must take it, strictly (checked without copying)
            LM(model_cfg).load_state_dict(sd, strict=True, assign=True)
        save_model(_Shell(model_cfg), work, state_dict=sd, extra=extra)
        metrics = metrics_of(sd)
        (Path(work) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        if trainer.logger is not None and after:
            trainer.logger.log_hyperparams(
                {**hparams, **({"params": metrics["params"]} if "params" in metrics else {})},
                metrics={f"hp/val_{k}": v for k, v in after.items() if k != "step" and not math.isnan(v)})
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        if commit is not None:
            commit(metrics)
    trainer.strategy.barrier()
    return metrics


class _Shell:
    """What ``save_model`` needs of a model (its config) when only a state dict exists."""

    def __init__(self, cfg: ModelConfig):
        self.cfg = cfg
