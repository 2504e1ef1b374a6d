"""Scale-out in one place: strategies, FSDP2 sharding, checkpoint consolidation.

``train.strategy`` picks one (DESIGN.md 6):

* ``auto``  one device (CPU or one GPU);
* ``ddp``   Lightning DDPStrategy (gloo on CPU, NCCL on GPU);
* ``fsdp2`` Lightning ModelParallelStrategy with ``torch.distributed.fsdp.fully_shard``
  applied per transformer block, then the root (``apply_fsdp2``, called from the
  LightningModule's ``configure_model``); runs on CPU with gloo;
* ``fsdp``  Lightning FSDPStrategy (CUDA only; Lightning refuses the CPU): block
  auto-wrap, optional activation checkpointing, bf16 mixed precision, sharded
  checkpoints.

Sharded checkpoints (a directory per checkpoint, one shard per rank) consolidate into a
plain state dict with ``torch.distributed.checkpoint.format_utils.dcp_to_torch_save``
(``consolidate_checkpoint``), which is what every artifact stores as ``model.pt``.

This module imports Lightning only inside ``make_strategy``, so ``aqaa`` stays
framework-free on import.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from .config import ConfigError, TrainConfig


def resolve_accelerator(tc: TrainConfig) -> str:
    if tc.accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if tc.accelerator == "gpu" and not torch.cuda.is_available():
        raise ConfigError("key 'train.accelerator': 'gpu' but torch sees no CUDA device")
    return tc.accelerator


def cpu_has_fast_bf16() -> bool:
    """AVX512-BF16 / AMX: where bf16 matmuls beat float32 (about 2x for the backbone here)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def resolve_precision(tc: TrainConfig, accelerator: str) -> str:
    """``auto``: bf16 autocast where the hardware runs bf16 fast, else float32."""
    if tc.precision != "auto":
        return tc.precision
    if accelerator == "gpu":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_fast_bf16() else "32-true"


def check_strategy(tc: TrainConfig) -> str:
    """Fail early, naming the key, on a strategy this machine cannot run; returns the accelerator."""
    accelerator = resolve_accelerator(tc)
    world = tc.devices * tc.num_nodes
    if tc.strategy == "auto" and world > 1:
        raise ConfigError(f"key 'train.strategy': 'auto' runs on one device, but train.devices x train.num_nodes "
                          f"= {world}; choose ddp, fsdp2 or fsdp")
    if tc.strategy == "fsdp" and accelerator != "gpu":
        raise ConfigError("key 'train.strategy': 'fsdp' (Lightning FSDPStrategy) needs CUDA GPUs and none are "
                          "available; Lightning refuses it on the CPU. Use train.strategy=fsdp2 there (FSDP2 per "
                          "block, gloo on CPU)")
    return accelerator


def make_strategy(tc: TrainConfig, accelerator: str, precision: str):
    """The Lightning strategy object (or name) for ``train.strategy``."""
    from aqaa.model import Block

    check_strategy(tc)
    world = tc.devices * tc.num_nodes
    if tc.strategy == "auto":
        return "auto"
    if tc.strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(process_group_backend="gloo" if accelerator == "cpu" else None,
                           find_unused_parameters=False)
    if tc.strategy == "fsdp2":
        from lightning.pytorch.strategies import ModelParallelStrategy

        # Pure data parallelism over every process; FSDP2 itself is applied in configure_model.
        return ModelParallelStrategy(data_parallel_size=world, tensor_parallel_size=1,
                                     save_distributed_checkpoint=True,
                                     process_group_backend="gloo" if accelerator == "cpu" else None)
    if tc.strategy == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy
        from torch.distributed.fsdp import MixedPrecision

        mp = None
        if precision in ("bf16-mixed", "bf16-true"):
            # Compute and all-gather in bf16, reduce gradients in fp32 (stable sums over many ranks).
            mp = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, buffer_dtype=torch.float32)
        return FSDPStrategy(
            auto_wrap_policy={Block},
            activation_checkpointing_policy={Block} if tc.activation_checkpointing else None,
            mixed_precision=mp,
            sharding_strategy="FULL_SHARD",
            state_dict_type="sharded",
            limit_all_gathers=True,
        )
    raise ConfigError(f"key 'train.strategy': unknown strategy '{tc.strategy}'")


# ----- FSDP2 -----------------------------------------------------------------------------


def apply_fsdp2(model: torch.nn.Module, mesh, param_dtype: torch.dtype | None = None,
                activation_checkpointing: bool = False) -> torch.nn.Module:
    """Shard ``model`` (an ``aqaa.model.LM``) with FSDP2: each block is its own unit (its
    parameters are all-gathered just before it runs and freed after), then the root
    (embedding, final norm, output head: tied weights stay in one unit)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    kw = {"mesh": mesh}
    if param_dtype is not None:
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    if activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

        for i, block in enumerate(model.blocks):
            model.blocks[i] = checkpoint_wrapper(block)
    for i, block in enumerate(model.blocks):
        # The last block's parameters are needed again at once by backward: keep them gathered.
        fully_shard(block, reshard_after_forward=i < len(model.blocks) - 1, **kw)
    fully_shard(model, **kw)
    return model


def load_full_state_dict(model: torch.nn.Module, state_dict: dict | None) -> None:
    """Load a plain (full) state dict into a sharded model; on rank 0 only ``state_dict``
    needs to be real (it is broadcast), others may pass None."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state_dict or {},
                         options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=True))


# ----- checkpoint consolidation ------------------------------------------------------------


def strip_prefix(sd: dict, prefix: str = "model.") -> dict:
    """LightningModule keys (``model.blocks.0...``) -> the plain model's (``blocks.0...``);
    drops activation-checkpoint wrapper names and torch.compile prefixes."""
    out = {}
    for k, v in sd.items():
        for wrapper in ("_checkpoint_wrapped_module.", "_fsdp_wrapped_module.", "_orig_mod."):
            k = k.replace(wrapper, "")
        if k.startswith(prefix):
            out[k[len(prefix):]] = v
    return out


def consolidate_checkpoint(path: str | Path) -> dict:
    """The full model state dict (LightningModule keys) of a Lightning checkpoint: a file,
    or a sharded directory (DCP, one shard per rank) consolidated with ``dcp_to_torch_save``."""
    path = Path(path)
    if path.is_dir():
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            out = Path(tmp) / "full.pt"
            dcp_to_torch_save(path, out)
            full = torch.load(out, map_location="cpu", weights_only=True)
    else:
        full = torch.load(path, map_location="cpu", weights_only=True)
    # ModelParallelStrategy (fsdp2) and single-file checkpoints: "state_dict"; FSDPStrategy's sharded: "model"
    sd = full["state_dict"] if "state_dict" in full else full["model"]
    # DCP stores a tied weight once per name; both names come back. Plain tensors only.
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().cpu() for k, v in sd.items()
            if isinstance(v, torch.Tensor)}


def world_info() -> tuple[int, int]:
    """(rank, world size) of this process: from torch.distributed, or the launcher's env."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))), int(os.environ.get("WORLD_SIZE", 1))
