"""LightningDataModules over the corpus manifests (thin wrappers around ``aqaa.data``)."""

from .lm import LMDataModule
from .spoken_qa import SpokenQADataModule

__all__ = ["LMDataModule", "SpokenQADataModule"]
