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
from typing import Any, Optional, Sequence

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
    # file under `checkpoints` naming each stage's artifact of the last run (sweeps give every
    # trial its own, so they never move what `aqaa chat` and `aqaa eval` pick by default)
    latest: str = "latest.json"


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


TOKEN_STREAMS = ("dual", "linguistic", "semantic")


@dataclass
class TokenizerConfig:
    """The dual-codebook audio tokenizer (aqaa/tokenizer); its codebook sizes are audio_tokens'."""

    streams: str = "dual"  # audio ids the backbone sees: dual (2:3 interleaved) | linguistic | semantic
    d_model: int = 144
    n_heads: int = 4
    n_layers: int = 2  # transformer layers per encoder
    dropout: float = 0.0  # CPU dropout (bernoulli) costs a quarter of a step at this size
    vq_dim: int = 32  # semantic code vectors (unit length, cosine codebook)
    vq_decay: float = 0.99  # EMA decay of the semantic codebook
    vq_warmup: int = 150  # steps before the semantic codes are used (the encoder learns content first)
    vq_commitment: float = 0.25
    recon_weight: float = 1.0  # mel reconstruction against CTC in the semantic loss
    max_steps: int = 500
    batch_size: int = 16  # clips per step
    lr: float = 2e-3
    warmup_steps: int = 50
    seed: int = 0
    val_every: int = 200  # steps between validations (CER, losses); not part of the artifact key
    ckpt_every: int = 50  # steps between resumable checkpoints; not part of the artifact key
    encode_batch: int = 32  # clips per batch when tokenizing a corpus; not part of the key
    threads: int = 0  # torch intra-op threads while training/tokenizing; 0 = torch's default; not in the key


VOCODER_WAVES = ("istft", "griffinlim")


@dataclass
class VocoderConfig:
    """Tokens -> 24 kHz speech (aqaa/vocoder): a flow-matching token -> mel net (100 frames/s),
    then a trained iSTFT generator, or Griffin-Lim (``generator: griffinlim``: nothing to train)."""

    n_mels: int = 80
    train_pairs: bool = True  # also train on the rejected answers of train preference pairs (same voice)
    # token -> mel: conditional flow matching (token encoder + 1-D U-Net)
    code_vectors: bool = True  # embed codes from the tokenizer's codebook vectors (generalises to rare codes)
    d_enc: int = 128  # token encoder width (runs at 50 Hz)
    enc_res_blocks: int = 2
    enc_layers: int = 2  # transformer layers of the token encoder
    n_heads: int = 4
    channels: list[int] = field(default_factory=lambda: [64, 128])  # U-Net width per level (x2 down each)
    transformers: list[int] = field(default_factory=lambda: [0, 1])  # transformer blocks per U-Net level
    n_mid: int = 1
    sigma_min: float = 1e-4
    cond_dropout: float = 0.2  # condition dropped in training, for classifier-free guidance
    prior_weight: float = 1.0  # the encoder's own mel regression next to the flow loss
    flow_max_steps: int = 600  # quick start: ~3.5 min of one core
    flow_batch: int = 16
    flow_crop_s: float = 1.2  # training crop, rounded to whole 120 ms token groups
    flow_lr: float = 2e-3
    # mel -> wave
    generator: str = "istft"  # istft (trained, Vocos-style) | griffinlim (untrained fallback)
    gen_dim: int = 192
    gen_layers: int = 6
    gen_max_steps: int = 400  # quick start: ~2 min of one core
    gen_batch: int = 16
    gen_segment_s: float = 0.4
    gen_lr: float = 2e-3
    warmup_steps: int = 50
    seed: int = 0
    # inference defaults, stored in the artifact's vocoder.json; not part of the artifact key
    steps: int = 10  # Euler steps of the flow's ODE
    # Classifier-free guidance strength (0 = off, one evaluation per step). Off by default:
    # at the quick-start budget the unconditional field is too poorly trained to guide
    # with; 0.7 doubled the Whisper WER of resynthesised speech (benchmarks/vocoder.py --guidance-grid).
    guidance: float = 0.0
    griffin_lim_iters: int = 32
    # how training runs; not part of the artifact key
    val_every: int = 300
    ckpt_every: int = 100
    log_audio: int = 2  # validation clips written to TensorBoard as audio


@dataclass
class LayoutConfig:
    """How an answer's text and audio ids are laid out (DESIGN.md 3)."""

    layout: str = "interleaved"
    ratio: list[int] = field(default_factory=lambda: [10, 15])  # m text ids : n audio ids
    splice: str = "marker_preserving"


# ----- backbone and its training stages (aqaa/model.py, lightning_modules/lm.py) -----
MODEL_PRESETS = ("tiny", "small", "paper")  # aqaa.model.PRESETS
PRETRAIN_TASKS = ("asr", "tts", "interleave")  # aqaa.lm_data.PRETRAIN_TASKS
STRATEGIES = ("auto", "ddp", "fsdp2", "fsdp")
ACCELERATORS = ("auto", "cpu", "gpu")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true")
MERGE_STAGES = ("pretrain", "sft1", "sft2", "dpo")  # backbone artifacts a merge may take
SFT2_CATEGORIES = ["voice_control", "multi_state", "role_play"]  # the high-quality AQTAA subset


@dataclass
class BackboneConfig:
    """The Llama-style backbone: a preset of aqaa/model.py, optionally reshaped (None = preset's)."""

    preset: str = "tiny"  # tiny (~6M params) | small (~80M, one GPU) | paper (130B class, meta device)
    n_layer: Optional[int] = None
    n_head: Optional[int] = None
    n_kv_head: Optional[int] = None  # grouped-query attention: K/V heads
    d_model: Optional[int] = None
    d_ff: Optional[int] = None  # SwiGLU hidden size
    max_seq_len: Optional[int] = None
    rope_theta: Optional[float] = None
    tie_embeddings: Optional[bool] = None
    dropout: float = 0.0


@dataclass
class LMStageConfig:
    """Optimisation of one backbone stage: AdamW, linear warm-up then cosine decay."""

    max_steps: int = 200
    lr: float = 1e-3
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio
    weight_decay: float = 0.1
    batch_tokens: int = 8192  # ids per optimizer step over all devices, padding included (length-bucketed)
    seed: int = 0
    val_every: int = 100  # steps between validations; not part of the artifact key


@dataclass
class PretrainConfig(LMStageConfig):
    tasks: list[str] = field(default_factory=lambda: list(PRETRAIN_TASKS))  # asr | tts | interleave
    interleave_ratio: list[int] = field(default_factory=lambda: [10, 15])  # of the interleave task
    pairs: bool = True  # the preference pairs' answers too (more assistant speech)


@dataclass
class SFTConfig(LMStageConfig):
    aqta: bool = True  # also the text-answer (AQTA) version of each dialogue, mixed in (phase 1)
    categories: list[str] = field(default_factory=list)  # only these categories (empty = all)


@dataclass
class DPOConfig:
    """Preference optimisation from SFT phase 1 (lightning_modules/dpo.py)."""

    beta: float = 0.1  # strength of the KL anchor to the frozen reference
    masked: bool = True  # Step-Audio-AQAA's masked DPO: audio ids excluded from the log-ratios
    max_steps: int = 60
    lr: float = 5e-5
    warmup_steps: int = 5
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    batch_pairs: int = 8  # preference pairs per optimizer step (per device)
    seed: int = 0
    val_every: int = 20  # steps between validations; not part of the artifact key


@dataclass
class MergeConfig:
    """The weighted merge W = sum_i w_i W_i / sum_i w_i (paper: sft1, sft2, dpo at 5, 5, 1)."""

    stages: list[str] = field(default_factory=lambda: ["sft1", "sft2", "dpo"])
    weights: list[float] = field(default_factory=lambda: [5.0, 5.0, 1.0])


@dataclass
class EvalConfig:
    """The eval stage (aqaa/evaluate.py) and `aqaa chat` generation settings."""

    split: str = "test"
    limit: int = 0  # dialogues to generate for (0 = the whole split)
    max_new_tokens: int = 600
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0
    vocoder_steps: int = 10  # Euler steps of the vocoder's flow
    vocoder_guidance: Optional[float] = None  # the flow's CFG strength; None = this config's vocoder.guidance
    log_audio: int = 3  # question/answer pairs written to TensorBoard; not part of the artifact key


@dataclass
class TrainConfig:
    """How the backbone stages run; only precision and the stage sections change results."""

    strategy: str = "auto"  # auto (one device) | ddp | fsdp2 (FSDP2 per block, CPU or GPU) | fsdp (CUDA only)
    accelerator: str = "auto"  # auto | cpu | gpu
    devices: int = 1  # processes (CPU) or GPUs per node
    num_nodes: int = 1
    precision: str = "auto"  # auto = bf16-mixed where the device has fast bf16, else 32-true
    grad_clip: float = 1.0  # gradient norm clipping (0 = off)
    activation_checkpointing: bool = False  # recompute each block in backward (fsdp / fsdp2)
    ckpt_every: int = 50  # steps between resumable checkpoints; not part of the artifact key
    # torch intra-op threads per process (0 = torch's default, one per core). On a CPU shared
    # with other jobs, 1 (or OMP_WAIT_POLICY=PASSIVE) avoids threads spinning on each other.
    threads: int = 0
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    sft1: SFTConfig = field(default_factory=lambda: SFTConfig(lr=5e-4, aqta=True))
    sft2: SFTConfig = field(default_factory=lambda: SFTConfig(lr=2e-4, max_steps=100, warmup_steps=10, aqta=False,
                                                              categories=list(SFT2_CATEGORIES)))
    dpo: DPOConfig = field(default_factory=DPOConfig)


@dataclass
class ExperimentConfig:
    name: str = "quickstart"
    paths: PathsConfig = field(default_factory=PathsConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    text: TextConfig = field(default_factory=TextConfig)
    audio_tokens: AudioTokensConfig = field(default_factory=AudioTokensConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    vocoder: VocoderConfig = field(default_factory=VocoderConfig)
    model: BackboneConfig = field(default_factory=BackboneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


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
    tk = cfg.tokenizer
    if tk.streams not in TOKEN_STREAMS:
        fail("tokenizer.streams", f"'{tk.streams}' is not one of {', '.join(TOKEN_STREAMS)}")
    for k in ("d_model", "n_heads", "n_layers", "vq_dim", "max_steps", "batch_size", "val_every",
              "ckpt_every", "encode_batch"):
        if getattr(tk, k) < 1:
            fail(f"tokenizer.{k}", f"must be >= 1, got {getattr(tk, k)}")
    if tk.d_model % tk.n_heads:
        fail("tokenizer.d_model", f"{tk.d_model} is not divisible by tokenizer.n_heads={tk.n_heads}")
    if not 0 <= tk.vq_warmup < tk.max_steps:
        fail("tokenizer.vq_warmup", f"must be in [0, tokenizer.max_steps={tk.max_steps}), got {tk.vq_warmup}")
    if not 0 < tk.vq_decay < 1:
        fail("tokenizer.vq_decay", f"must be in (0, 1), got {tk.vq_decay}")
    if not 0 <= tk.dropout < 1:
        fail("tokenizer.dropout", f"must be in [0, 1), got {tk.dropout}")
    for k in ("lr", "vq_commitment", "recon_weight"):
        if getattr(tk, k) < 0 or (k == "lr" and tk.lr == 0):
            fail(f"tokenizer.{k}", f"must be {'> 0' if k == 'lr' else '>= 0'}, got {getattr(tk, k)}")
    if tk.warmup_steps < 0:
        fail("tokenizer.warmup_steps", f"must be >= 0, got {tk.warmup_steps}")
    if tk.threads < 0:
        fail("tokenizer.threads", f"must be >= 0 (0 = torch's default), got {tk.threads}")
    _check_vocoder(cfg.vocoder, fail)
    if cfg.eval.vocoder_guidance is not None and cfg.eval.vocoder_guidance < 0:
        fail("eval.vocoder_guidance", f"must be >= 0 (or null: vocoder.guidance), got {cfg.eval.vocoder_guidance}")
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
    _check_lm(cfg, fail)


def _check_vocoder(vc: VocoderConfig, fail) -> None:
    if vc.generator not in VOCODER_WAVES:
        fail("vocoder.generator", f"'{vc.generator}' is not one of {', '.join(VOCODER_WAVES)}")
    for k in ("n_mels", "d_enc", "n_heads", "flow_max_steps", "flow_batch", "gen_dim", "gen_layers", "gen_batch",
              "steps", "griffin_lim_iters", "val_every", "ckpt_every"):
        if getattr(vc, k) < 1:
            fail(f"vocoder.{k}", f"must be >= 1, got {getattr(vc, k)}")
    for k in ("enc_res_blocks", "enc_layers", "n_mid", "gen_max_steps", "warmup_steps", "log_audio"):
        if getattr(vc, k) < 0:
            fail(f"vocoder.{k}", f"must be >= 0, got {getattr(vc, k)}")
    if not vc.channels or min(vc.channels) < 8 or any(c % 8 for c in vc.channels):
        fail("vocoder.channels", f"must be a non-empty list of multiples of 8 (GroupNorm groups), got {vc.channels}")
    if len(vc.transformers) != len(vc.channels) or min(vc.transformers) < 0:
        fail("vocoder.transformers", f"needs one count >= 0 per level of vocoder.channels {vc.channels}, "
                                     f"got {vc.transformers}")
    for k in ("d_enc", *(["channels"] if any(vc.transformers) else [])):
        widths = vc.channels if k == "channels" else [vc.d_enc]
        if any(w % vc.n_heads for w in widths):
            fail(f"vocoder.{k}", f"{widths} is not divisible by vocoder.n_heads={vc.n_heads}")
    if vc.d_enc % 8:
        fail("vocoder.d_enc", f"must be a multiple of 8 (GroupNorm groups), got {vc.d_enc}")
    if not 0 <= vc.cond_dropout < 1:
        fail("vocoder.cond_dropout", f"must be in [0, 1), got {vc.cond_dropout}")
    if not 0 <= vc.sigma_min < 1:
        fail("vocoder.sigma_min", f"must be in [0, 1), got {vc.sigma_min}")
    for k in ("flow_lr", "gen_lr", "flow_crop_s", "gen_segment_s"):
        if getattr(vc, k) <= 0:
            fail(f"vocoder.{k}", f"must be > 0, got {getattr(vc, k)}")
    if vc.flow_crop_s < 0.12:
        fail("vocoder.flow_crop_s", f"must hold at least one 120 ms token group, got {vc.flow_crop_s}")
    for k in ("guidance", "prior_weight"):
        if getattr(vc, k) < 0:
            fail(f"vocoder.{k}", f"must be >= 0, got {getattr(vc, k)}")
    if vc.generator == "istft" and vc.gen_max_steps < 1:
        fail("vocoder.gen_max_steps", "must be >= 1 with vocoder.generator=istft (or use generator=griffinlim)")


def _check_lm(cfg: ExperimentConfig, fail) -> None:
    """The backbone (model.*) and its training (train.*)."""
    mc, tc = cfg.model, cfg.train
    if mc.preset not in MODEL_PRESETS:
        fail("model.preset", f"'{mc.preset}' is not one of {', '.join(MODEL_PRESETS)}")
    for k in ("n_layer", "n_head", "n_kv_head", "d_model", "d_ff", "max_seq_len"):
        if getattr(mc, k) is not None and getattr(mc, k) < 1:
            fail(f"model.{k}", f"must be >= 1, got {getattr(mc, k)}")
    if not 0 <= mc.dropout < 1:
        fail("model.dropout", f"must be in [0, 1), got {mc.dropout}")
    if any(getattr(mc, k) is not None for k in ("n_layer", "n_head", "n_kv_head", "d_model")):
        from .model import preset  # torch: only when a shape is overridden

        try:
            preset(mc.preset, **{k: getattr(mc, k) for k in ("n_layer", "n_head", "n_kv_head", "d_model")})
        except ValueError as e:
            fail("model", str(e))
    if tc.strategy not in STRATEGIES:
        fail("train.strategy", f"'{tc.strategy}' is not one of {', '.join(STRATEGIES)}")
    if tc.accelerator not in ACCELERATORS:
        fail("train.accelerator", f"'{tc.accelerator}' is not one of {', '.join(ACCELERATORS)}")
    if tc.strategy == "fsdp" and tc.accelerator == "cpu":
        fail("train.strategy", "'fsdp' (Lightning FSDPStrategy) needs CUDA GPUs; Lightning refuses it on the CPU. "
                               "Use train.strategy=fsdp2 (FSDP2 per block, runs on CPU with gloo)")
    if tc.precision not in PRECISIONS:
        fail("train.precision", f"'{tc.precision}' is not one of {', '.join(PRECISIONS)}")
    for k in ("devices", "num_nodes", "ckpt_every"):
        if getattr(tc, k) < 1:
            fail(f"train.{k}", f"must be >= 1, got {getattr(tc, k)}")
    if tc.grad_clip < 0:
        fail("train.grad_clip", f"must be >= 0 (0 = off), got {tc.grad_clip}")
    if tc.threads < 0:
        fail("train.threads", f"must be >= 0 (0 = torch's default), got {tc.threads}")
    for name in ("pretrain", "sft1", "sft2"):
        st = getattr(tc, name)
        for k in ("max_steps", "batch_tokens", "val_every"):
            if getattr(st, k) < 1:
                fail(f"train.{name}.{k}", f"must be >= 1, got {getattr(st, k)}")
        if st.lr <= 0:
            fail(f"train.{name}.lr", f"must be > 0, got {st.lr}")
        if st.warmup_steps < 0:
            fail(f"train.{name}.warmup_steps", f"must be >= 0, got {st.warmup_steps}")
        if not 0 <= st.min_lr_ratio <= 1:
            fail(f"train.{name}.min_lr_ratio", f"must be in [0, 1], got {st.min_lr_ratio}")
        if st.weight_decay < 0:
            fail(f"train.{name}.weight_decay", f"must be >= 0, got {st.weight_decay}")
    pt = tc.pretrain
    if not pt.tasks:
        fail("train.pretrain.tasks", f"must name at least one of {', '.join(PRETRAIN_TASKS)}")
    for t in pt.tasks:
        if t not in PRETRAIN_TASKS:
            fail("train.pretrain.tasks", f"unknown task '{t}'; allowed: {', '.join(PRETRAIN_TASKS)}")
    r = list(pt.interleave_ratio)
    if len(r) != 2 or min(r) < 1 or r[1] % GROUP:
        fail("train.pretrain.interleave_ratio", f"must be [m, n] with m, n >= 1 and n a multiple of {GROUP}, got {r}")
    for name in ("sft1", "sft2"):
        for c in getattr(tc, name).categories:
            if c not in CATEGORIES:
                fail(f"train.{name}.categories", f"unknown category '{c}'; allowed: {', '.join(CATEGORIES)}")
    dc = tc.dpo
    if dc.beta <= 0:
        fail("train.dpo.beta", f"must be > 0, got {dc.beta}")
    for k in ("max_steps", "batch_pairs", "val_every"):
        if getattr(dc, k) < 1:
            fail(f"train.dpo.{k}", f"must be >= 1, got {getattr(dc, k)}")
    if dc.lr <= 0:
        fail("train.dpo.lr", f"must be > 0, got {dc.lr}")
    if dc.warmup_steps < 0 or not 0 <= dc.min_lr_ratio <= 1 or dc.weight_decay < 0:
        fail("train.dpo", "warmup_steps and weight_decay must be >= 0, min_lr_ratio in [0, 1]")
    ec = cfg.eval
    if ec.split not in ("train", "val", "test"):
        fail("eval.split", f"'{ec.split}' is not one of train, val, test")
    if ec.limit < 0 or ec.max_new_tokens < 1 or ec.vocoder_steps < 1 or ec.log_audio < 0:
        fail("eval", "limit and log_audio must be >= 0, max_new_tokens and vocoder_steps >= 1")
    if ec.temperature < 0 or not 0 < ec.top_p <= 1:
        fail("eval", f"temperature must be >= 0 and top_p in (0, 1], got {ec.temperature}, {ec.top_p}")
    mc = cfg.merge
    if not mc.stages:
        fail("merge.stages", f"must name at least one of {', '.join(MERGE_STAGES)}")
    for st in mc.stages:
        if st not in MERGE_STAGES:
            fail("merge.stages", f"unknown stage '{st}'; allowed: {', '.join(MERGE_STAGES)}")
    if len(mc.weights) != len(mc.stages):
        fail("merge.weights", f"{len(mc.weights)} weights for {len(mc.stages)} merge.stages")
    if any(w < 0 for w in mc.weights) or sum(mc.weights) <= 0:
        fail("merge.weights", f"must be >= 0 and not all 0, got {list(mc.weights)}")


def decode_guidance(cfg: ExperimentConfig) -> float:
    """The vocoder guidance eval and chat decode with: ``eval.vocoder_guidance``, else
    ``vocoder.guidance`` (not the default stored in a vocoder artifact, which experiments
    sharing that vocoder may disagree on)."""
    g = cfg.eval.vocoder_guidance
    return float(cfg.vocoder.guidance if g is None else g)


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
