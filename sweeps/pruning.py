"""Prune a sweep trial on the validation perplexity of the stages it trains.

Optuna's ``PyTorchLightningPruningCallback`` reports once per epoch; the backbone stages are
step-based (a quick-start stage is less than one epoch long) and a trial trains several of
them in a row, each counting steps from zero. This subclass reports at a step that is
unique within the trial, ``offset(stage) + global_step``, with the stages laid end to end
in pipeline order, so the same stage at the same step lines up across trials.

The pruner compares intermediate values in the study's direction. Perplexity falls as a
trial improves, so a study that maximises its objective (chat_proxy) is reported
``-perplexity``: the worse a trial's perplexity, the more likely it is pruned either way.
"""

from __future__ import annotations

import math

import optuna
from optuna_integration import PyTorchLightningPruningCallback

PRUNED_STAGES = ("pretrain", "sft1", "sft2", "dpo")  # the trained stages, in pipeline order


def stage_offsets(cfg) -> dict[str, int]:
    """First reporting step of each trained stage: the stages' max_steps laid end to end."""
    out, at = {}, 0
    for stage in PRUNED_STAGES:
        out[stage] = at
        at += getattr(cfg.train, stage).max_steps + 1
    return out


class StagePruning(PyTorchLightningPruningCallback):
    def __init__(self, trial: optuna.Trial, monitor: str, offset: int, sign: float = 1.0):
        super().__init__(trial, monitor)
        self.offset, self.sign = offset, sign

    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.world_size > 1:
            # Lightning's launcher would re-run the sweep command in every process.
            raise ValueError("sweep trials run in one process (train.devices=1); run multi-device "
                             "trials as their own distributed jobs")
        super().on_fit_start(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return  # the stage logs no such perplexity (e.g. no audio targets): nothing to compare
        step = self.offset + trainer.global_step
        self._trial.report(self.sign * float(value), step=step)
        if self._trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {trainer.global_step} of "
                                     f"{type(pl_module).__name__} ({self.monitor} = {float(value):.3g})")
