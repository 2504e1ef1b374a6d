"""AQAA Lab core: the framework-free (plain PyTorch) half of the suite.

Nothing in this package imports Lightning; ``lightning_modules/``, ``datamodules/`` and
``sweeps/`` are thin layers on top of it.
"""

__version__ = "0.1.0"
