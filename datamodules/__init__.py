"""LightningDataModules over the corpus manifests (thin wrappers around ``aqaa.data``)."""

from .spoken_qa import SpokenQADataModule

__all__ = ["SpokenQADataModule"]
