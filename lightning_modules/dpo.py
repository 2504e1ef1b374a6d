"""DPO stage: preference optimisation of the SFT phase-1 backbone, masked or not.

``DPOModule`` holds the policy (trained) and a frozen reference, both loaded from the
SFT1 artifact and, under ``train.strategy=fsdp2``, both sharded the same way in
``configure_model``. Each step scores chosen and rejected responses under both models
(``aqaa.losses.sequence_logps`` over the ``masked`` or ``unmasked`` response mask) and
minimises ``aqaa.losses.dpo_loss``. Logged as TRL does: ``rewards/chosen``,
``rewards/rejected``, ``rewards/accuracies``, ``rewards/margins``, ``logps/chosen``,
``logps/rejected`` (train/ and val/), plus the validation perplexities of the chosen
responses per id class (text, audio, linguistic, semantic), as the backbone stages log.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from aqaa.distributed import (apply_fsdp2, load_full_state_dict, make_strategy,
                              resolve_accelerator, resolve_precision)
from aqaa.lm_data import class_sums, id_class_table, perplexities, token_ce
from aqaa.losses import dpo_loss, sequence_logps
from aqaa.model import LM, ModelConfig
from aqaa.preference import PreferenceExample, collate_pairs
from aqaa.tokens import Vocab
from lightning_modules.lm import fit_with_validation, save_stage, stage_trainer


class DPOModule(L.LightningModule):
    def __init__(self, model_cfg: dict, vocab: dict, init_path: str, beta: float = 0.1, masked: bool = True,
                 lr: float = 1e-4, warmup_steps: int = 5, max_steps: int = 60, min_lr_ratio: float = 0.1,
                 weight_decay: float = 0.0, fsdp_param_dtype: str | None = None,
                 activation_checkpointing: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.model: LM | None = None  # the policy; built in configure_model
        self.ref: LM | None = None
        self.vocab = Vocab(**vocab)
        self.register_buffer("id_class", id_class_table(self.vocab, model_cfg["vocab_size"]), persistent=False)
        self.loss_history: list[float] = []
        self.val_history: list[dict] = []
        self.train_time = 0.0
        self._t0 = 0.0

    def configure_model(self) -> None:
        if self.model is not None:
            return
        from lightning.pytorch.strategies import ModelParallelStrategy

        hp = self.hparams
        cfg = ModelConfig.from_dict(hp.model_cfg)
        init = torch.load(hp.init_path, map_location="cpu", weights_only=True)
        strategy = self.trainer.strategy
        models = []
        for _ in range(2):  # policy, then the frozen reference: same weights, same sharding
            if isinstance(strategy, ModelParallelStrategy):
                with torch.device("meta"):
                    m = LM(cfg)
                dtype = getattr(torch, hp.fsdp_param_dtype) if hp.fsdp_param_dtype else None
                apply_fsdp2(m, self.device_mesh["data_parallel"], param_dtype=dtype,
                            activation_checkpointing=hp.activation_checkpointing)
                m.to_empty(device=strategy.root_device)
                load_full_state_dict(m, init)
                m.reset_parameters()
            else:
                m = LM(cfg)
                m.load_state_dict(init)
            models.append(m)
        self.model, ref = models
        ref.requires_grad_(False)
        ref.eval()
        # Kept out of the module tree: the reference is not trained, not checkpointed (it is
        # the SFT1 artifact) and not seen by the optimizer.
        self.__dict__["ref"] = ref

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids)

    def _reference(self) -> LM:
        if self.ref.embed.weight.device != self.device:  # the strategy moved only the policy
            self.ref.to(self.device)
        return self.ref

    def _scores(self, batch: dict) -> dict:
        mask = batch["masked"] if self.hparams.masked else batch["unmasked"]
        labels = batch["labels"]
        logits = self.model(batch["input_ids"])
        logps = sequence_logps(logits, labels, mask)
        with torch.no_grad():
            ref_logps = sequence_logps(self._reference()(batch["input_ids"]), labels, mask)
        B = batch["n_pairs"]
        loss, chosen_r, rejected_r = dpo_loss(logps[:B], logps[B:], ref_logps[:B], ref_logps[B:],
                                              beta=self.hparams.beta)
        return {"loss": loss, "chosen": chosen_r, "rejected": rejected_r, "logps": logps.detach(),
                "logits": logits, "B": B}

    def _log_rewards(self, prefix: str, s: dict) -> None:
        B = s["B"]
        vals = {
            "rewards/chosen": s["chosen"].mean(),
            "rewards/rejected": s["rejected"].mean(),
            "rewards/accuracies": (s["chosen"] > s["rejected"]).float().mean(),
            "rewards/margins": (s["chosen"] - s["rejected"]).mean(),
            "logps/chosen": s["logps"][:B].mean(),
            "logps/rejected": s["logps"][B:].mean(),
        }
        self.log_dict({f"{prefix}/{k}": v for k, v in vals.items()}, batch_size=B, sync_dist=prefix == "val")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        s = self._scores(batch)
        self.log("train/loss", s["loss"], prog_bar=True, batch_size=s["B"])
        self._log_rewards("train", s)
        self.loss_history.append(round(float(s["loss"].detach()), 6))
        return s["loss"]

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        dt = time.perf_counter() - self._t0
        self.train_time += dt
        self.log("train/tokens_per_s", batch["n_tokens"] / max(dt, 1e-9), batch_size=1)

    def on_validation_epoch_start(self) -> None:
        self._val = torch.zeros(4, 2, device=self.device)
        self._val_rewards = torch.zeros(4, device=self.device)  # sum chosen, sum rejected, correct, pairs

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        s = self._scores(batch)
        self._log_rewards("val", s)
        self.log("val/loss", s["loss"], batch_size=s["B"], sync_dist=True)
        B = s["B"]
        # Perplexity of the chosen (correct) answers, by id class, as the backbone stages report it.
        ce = token_ce(s["logits"][:B], batch["labels"][:B])
        self._val += class_sums(ce.detach(), batch["labels"][:B], self.id_class)
        self._val_rewards += torch.stack([s["chosen"].sum(), s["rejected"].sum(),
                                          (s["chosen"] > s["rejected"]).float().sum(),
                                          torch.tensor(float(B), device=self.device)])

    def on_validation_epoch_end(self) -> None:
        sums = self.trainer.strategy.reduce(self._val, reduce_op="sum")
        r = self.trainer.strategy.reduce(self._val_rewards, reduce_op="sum").cpu()
        ppl = perplexities(sums.cpu())
        self.log_dict({f"val/{k}": v for k, v in ppl.items() if not math.isnan(v)}, sync_dist=True)
        n = max(float(r[3]), 1.0)
        self.val_history.append({"step": self.global_step, **ppl, "reward_chosen": float(r[0]) / n,
                                 "reward_rejected": float(r[1]) / n, "reward_accuracy": float(r[2]) / n})

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, betas=(0.9, 0.95))
        warm, total, floor = max(1, hp.warmup_steps), max(1, hp.max_steps), hp.min_lr_ratio

        def schedule(step: int) -> float:  # linear warm-up, cosine decay (as the backbone stages)
            if step < warm:
                return (step + 1) / warm
            t = min(1.0, (step - warm) / max(1, total - warm))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

        return {"optimizer": opt,
                "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, schedule), "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["aqaa_run"] = {"loss_history": self.loss_history, "val_history": self.val_history,
                                  "train_time": self.train_time}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        run = checkpoint.get("aqaa_run", {})
        self.loss_history = list(run.get("loss_history", []))
        self.val_history = list(run.get("val_history", []))
        self.train_time = run.get("train_time", 0.0)


class _Pairs(L.LightningDataModule):
    def __init__(self, train: Sequence[PreferenceExample], val: Sequence[PreferenceExample], vocab: Vocab,
                 batch_pairs: int, seed: int):
        super().__init__()
        self.train, self.val, self.vocab, self.batch_pairs, self.seed = list(train), list(val), vocab, batch_pairs, seed

    def _loader(self, data, shuffle):
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(data, batch_size=self.batch_pairs, shuffle=shuffle, generator=g,
                          collate_fn=lambda ex: collate_pairs(ex, self.vocab))

    def train_dataloader(self):
        return self._loader(self.train, True)

    def val_dataloader(self):
        return self._loader(self.val, False)


def train_dpo(cfg, model_cfg: ModelConfig, vocab: Vocab, train: Sequence[PreferenceExample],
              val: Sequence[PreferenceExample], init_dir: Path, work: Path, version: str,
              callbacks: Sequence[Callback] = (), progress: bool = True, extra_metrics: dict | None = None,
              commit=None, log=print) -> dict | None:
    """Train DPO into ``work`` (model.pt, model_config.json, metrics.json); resumes from
    ``work/lightning/last.ckpt``. Returns metrics on rank 0, None elsewhere."""
    tc, dc = cfg.train, cfg.train.dpo
    accelerator = resolve_accelerator(tc)
    precision = resolve_precision(tc, accelerator)
    strategy = make_strategy(tc, accelerator, precision)
    fsdp_dtype = "bfloat16" if (tc.strategy == "fsdp2" and accelerator == "gpu" and "bf16" in precision) else None
    L.seed_everything(dc.seed, verbose=False)
    vocab_hp = {"text_size": vocab.text_size, "n_linguistic": vocab.n_linguistic, "n_semantic": vocab.n_semantic}
    module = DPOModule(model_cfg.to_dict(), vocab_hp, init_path=str(Path(init_dir) / "model.pt"), beta=dc.beta,
                       masked=dc.masked, lr=dc.lr, warmup_steps=dc.warmup_steps, max_steps=dc.max_steps,
                       min_lr_ratio=dc.min_lr_ratio, weight_decay=dc.weight_decay, fsdp_param_dtype=fsdp_dtype,
                       activation_checkpointing=tc.activation_checkpointing)
    dm = _Pairs(train, val, vocab, dc.batch_pairs, dc.seed)
    trainer = stage_trainer(cfg, "dpo", dc.max_steps, dc.val_every, bool(val), work, version, accelerator,
                            precision, strategy, callbacks, progress, log)
    before, after, wall = fit_with_validation(trainer, module, dm, work, "dpo", dc.max_steps, bool(val))

    def metrics_of(sd: dict) -> dict:
        hist = module.loss_history
        return {
            "stage": "dpo", "steps": trainer.global_step, "beta": dc.beta, "masked": dc.masked,
            "precision": precision, "strategy": tc.strategy, "world_size": trainer.world_size,
            "train_seconds": round(module.train_time, 1), "fit_wall_seconds": round(wall, 1),
            "train_loss_final": round(sum(hist[-10:]) / max(len(hist[-10:]), 1), 4),
            "val_before": before, "val": after, "val_history": module.val_history,
            "train_loss_history": hist, **(extra_metrics or {}),
        }

    layout = {"layout": cfg.layout.layout, "ratio": list(cfg.layout.ratio), "splice": cfg.layout.splice}
    extra = {"stage": "dpo", "vocab": vocab_hp, "streams": cfg.tokenizer.streams, "layout": layout}
    hparams = {"stage": "dpo", "beta": dc.beta, "masked": dc.masked, "lr": dc.lr, "max_steps": dc.max_steps}
    return save_stage(trainer, model_cfg, work, extra, metrics_of, hparams, after, commit)
