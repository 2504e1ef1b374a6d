"""Torch intra-op threads for a block of work (``tokenizer.threads``)."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def torch_threads(n: int):
    """``n`` torch intra-op threads inside the block (0 = leave as is), restored after.

    On a shared machine one thread per *idle* core is much faster than one per core:
    OpenMP threads waiting on busy cores stall every operation.
    """
    prev = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)
