"""Typed experiment configuration (OmegaConf structured configs).

An experiment is a YAML file under ``configs/experiments/`` that overrides the defaults
of ``ExperimentConfig``; ``key=value`` arguments override it again. Everything is
checked before any work starts: an unknown key, a wrong type or an invalid value raises
``ConfigError`` naming the key (and the file) and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .tokens import GROUP, LAYOUTS, SPLICES

CATEGORIES = ("reasoning", "knowledge", "voice_control", "multi_state", "role_play", "voice_understanding")
REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"


class ConfigError(ValueError):
    """A configuration problem, with the offending key (and file) in the message."""


@dataclass
class PathsConfig:
    checkpoints: str = "checkpoints"  # artifact root (relative to the working directory)
    runs: str = "runs"  # TensorBoard log root


@dataclass
class SplitSizes:
    train: int = 40
    val: int = 6
    test: int = 6


@dataclass
class CorpusConfig:
    seed: int = 0
    per_category: SplitSizes = field(default_factory=SplitSizes)  # dialogues per category and split
    categories: list[str] = field(default_factory=lambda: list(CATEGORIES))
    preference_pairs: bool = True  # synthesise DPO pairs for train and val items
    workers: int = 0  # synthesis processes; 0 = one per CPU core
    segment_pause_s: float = 0.15  # silence between the segments of a multi-state answer
    max_seconds: float = 30.0  # longest clip accepted (build and import)


@dataclass
class TextConfig:
    tokenizer: str = "bytes"  # see aqaa/text.py for why
    size: int = 256


@dataclass
class AudioTokensConfig:
    n_linguistic: int = 1024  # linguistic codebook, 16.67 Hz
    n_semantic: int = 4096  # semantic codebook, 25 Hz


@dataclass
class LayoutConfig:
    """How an answer's text and audio ids are laid out (DESIGN.md 3)."""

    layout: str = "interleaved"
    ratio: list[int] = field(default_factory=lambda: [10, 15])  # m text ids : n audio ids
    splice: str = "marker_preserving"


@dataclass
class ExperimentConfig:
    name: str = "quickstart"
    paths: PathsConfig = field(default_factory=PathsConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    text: TextConfig = field(default_factory=TextConfig)
    audio_tokens: AudioTokensConfig = field(default_factory=AudioTokensConfig)
    layout: LayoutConfig = field(default_factory=LayoutConfig)


def _friendly(err: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(err, "full_key", None) or "?"
    msg = str(err).splitlines()[0]
    if "Key '" in msg and "not in" in msg:
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.structured(ExperimentConfig)
        allowed = OmegaConf.select(node, parent) if parent else node
        names = ", ".join(sorted(allowed.keys())) if isinstance(allowed, DictConfig) else "?"
        return ConfigError(f"{source}: unknown key '{key}'; allowed here: {names}")
    return ConfigError(f"{source}: key '{key}': {msg}")


def experiment_path(name_or_path: str) -> Path:
    """An experiment name (``configs/experiments/NAME.yaml``) or a YAML path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        return p
    p = CONFIG_DIR / "experiments" / f"{name_or_path}.yaml"
    if not p.exists():
        known = sorted(q.stem for q in (CONFIG_DIR / "experiments").glob("*.yaml"))
        raise ConfigError(f"unknown experiment '{name_or_path}'; known: {', '.join(known)} (or pass a .yaml path)")
    return p


def load_config(experiment: str = "quickstart", overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Defaults <- experiment YAML <- ``key=value`` overrides, typed and validated."""
    cfg = OmegaConf.structured(ExperimentConfig)
    path = experiment_path(experiment)
    try:
        file_cfg = OmegaConf.load(path)
    except Exception as e:  # YAML syntax errors carry their own line numbers
        raise ConfigError(f"{path}: cannot parse YAML: {e}") from e
    try:
        cfg = OmegaConf.merge(cfg, file_cfg)
    except OmegaConfBaseException as e:
        raise _friendly(e, str(path)) from e
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not key=value")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as e:
            raise _friendly(e, f"override '{item}'") from e
    obj: ExperimentConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    validate(obj, source=f"{path}{' with overrides ' + ' '.join(overrides) if overrides else ''}")
    return obj


def validate(cfg: ExperimentConfig, source: str = "config") -> None:
    """Value checks that types alone cannot express."""

    def fail(key: str, msg: str) -> None:
        raise ConfigError(f"{source}: key '{key}': {msg}")

    for split in ("train", "val", "test"):
        n = getattr(cfg.corpus.per_category, split)
        if n < 1:
            fail(f"corpus.per_category.{split}", f"must be >= 1, got {n}")
    if not cfg.corpus.categories:
        fail("corpus.categories", f"must name at least one of {', '.join(CATEGORIES)}")
    for c in cfg.corpus.categories:
        if c not in CATEGORIES:
            fail("corpus.categories", f"unknown category '{c}'; allowed: {', '.join(CATEGORIES)}")
    if cfg.corpus.workers < 0:
        fail("corpus.workers", f"must be >= 0 (0 = one per core), got {cfg.corpus.workers}")
    if cfg.corpus.max_seconds <= 0:
        fail("corpus.max_seconds", "must be > 0")
    if cfg.text.tokenizer != "bytes":
        fail("text.tokenizer", f"unknown tokenizer '{cfg.text.tokenizer}'; allowed: bytes")
    if cfg.text.size != 256:
        fail("text.size", f"the bytes tokenizer has exactly 256 tokens, got {cfg.text.size}")
    for k in ("n_linguistic", "n_semantic"):
        if getattr(cfg.audio_tokens, k) < 2:
            fail(f"audio_tokens.{k}", "must be >= 2")
    if cfg.layout.layout not in LAYOUTS:
        fail("layout.layout", f"'{cfg.layout.layout}' is not one of {', '.join(LAYOUTS)}")
    if cfg.layout.splice not in SPLICES:
        fail("layout.splice", f"'{cfg.layout.splice}' is not one of {', '.join(SPLICES)}")
    r = list(cfg.layout.ratio)
    if len(r) != 2 or min(r) < 1:
        fail("layout.ratio", f"must be [m, n] with m, n >= 1 (m text ids : n audio ids), got {r}")
    if r[1] % GROUP:
        fail(
            "layout.ratio",
            f"audio part {r[1]} is not a multiple of {GROUP}: chunks must hold whole 2:3 "
            "linguistic:semantic groups (e.g. 10:15, 3:5, 6:50)",
        )


def to_dict(cfg: Any) -> dict:
    """A plain, JSON-able dict of a config dataclass (or a part of one)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def config_hash(*parts: Any) -> str:
    """Stable short hash of config parts (dataclasses, dicts or strings)."""
    norm = [to_dict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts]
    blob = json.dumps(norm, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
