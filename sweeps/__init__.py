"""Optuna studies over the paper's ablation axes (``aqaa sweep``, ``aqaa report``).

``studies`` defines the axes, ``runner`` runs trials as pipeline runs that reuse every
artifact their parameters do not touch, ``pruning`` reports validation perplexity to the
pruner, ``report`` turns a study into paper-shaped tables and plots.
"""

from .studies import PAPER_TABLES, STUDIES, Study, get_study

__all__ = ["PAPER_TABLES", "STUDIES", "Study", "get_study"]
