"""The flow-matching vocoder (DESIGN.md sections 2 and 9), in plain PyTorch.

``Vocoder.load(dir).decode(ling_codes, sem_codes) -> Tensor[samples]`` at 24 kHz:
tokens -> log-mel by conditional flow matching (``flow``), mel -> wave by a Vocos-style
iSTFT generator (``generator``) or Griffin-Lim (``mel``). Training lives in
``lightning_modules/vocoder.py``.
"""

from .flow import FlowConfig, TokenToMel
from .generator import Generator, GeneratorConfig
from .mel import GriffinLimVocoder, LogMel, MelConfig
from .vocoder import Vocoder, save_vocoder

__all__ = ["Vocoder", "save_vocoder", "FlowConfig", "TokenToMel", "Generator", "GeneratorConfig", "MelConfig",
           "LogMel", "GriffinLimVocoder"]
