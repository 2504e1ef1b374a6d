"""Spoken QA dialogues as waveform batches: the input of the tokenizer and vocoder stages."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from aqaa.audio import TOKENIZER_SR
from aqaa.data import SpokenQADataset, collate_spoken_qa


class SpokenQADataModule(L.LightningDataModule):
    def __init__(
        self,
        corpus_dir: str | Path,
        batch_size: int = 8,
        rate: int = TOKENIZER_SR,
        with_query: bool = True,
        num_workers: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.corpus_dir = Path(corpus_dir)
        self.datasets: dict[str, SpokenQADataset] = {}

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val", "test"):
            if split not in self.datasets:
                self.datasets[split] = SpokenQADataset(
                    self.corpus_dir, split, rate=self.hparams.rate, with_query=self.hparams.with_query
                )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=self.hparams.num_workers,
            collate_fn=collate_spoken_qa,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
