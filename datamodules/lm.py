"""Backbone training sequences (``aqaa.lm_data``) as length-bucketed batches.

The sampler forms global batches (one optimizer step over all devices) and hands each
rank its share, so Lightning's own distributed sampler is switched off
(``Trainer(use_distributed_sampler=False)``) and the rank comes from the trainer here.
"""

from __future__ import annotations

from typing import Sequence

import lightning as L
from torch.utils.data import DataLoader

from aqaa.lm_data import BucketSampler, Example, LMBatches


class LMDataModule(L.LightningDataModule):
    def __init__(self, train: Sequence[Example], val: Sequence[Example], pad_id: int, batch_tokens: int,
                 seed: int = 0):
        super().__init__()
        self.train_ds = LMBatches(train, pad_id)
        self.val_ds = LMBatches(val, pad_id) if val else None
        self.batch_tokens, self.seed = batch_tokens, seed

    def _world(self) -> tuple[int, int]:
        t = self.trainer
        return (t.world_size, t.global_rank) if t is not None else (1, 0)

    def train_sampler(self, world: int = 1, rank: int = 0) -> BucketSampler:
        return BucketSampler(self.train_ds.lengths, self.train_ds.n_loss, self.batch_tokens, world, rank,
                             shuffle=True, seed=self.seed)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_ds, batch_size=None, sampler=self.train_sampler(*self._world()), num_workers=0)

    def val_dataloader(self) -> DataLoader:
        if self.val_ds is None:
            return []
        world, rank = self._world()
        sampler = BucketSampler(self.val_ds.lengths, self.val_ds.n_loss, self.batch_tokens, world, rank, shuffle=False)
        return DataLoader(self.val_ds, batch_size=None, sampler=sampler, num_workers=0)
