"""Pinning torch's intra-op threads for a test: tiny ops spin-wait badly on a busy 2-core machine,
and CPU sums can depend on the thread count (the zoo's workers train with one)."""

from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int):
    """Run the block with `n` intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
