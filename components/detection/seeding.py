"""One seed for every random stream of a detector training run, and torch's deterministic kernels.

Why: two trainings with the same seed must give the same model, so a change's effect can be told
from run-to-run noise, and the spread over seeds is the only spread left. The streams: Python's
``random`` and numpy's legacy global generator (libraries that draw from them), torch's generator
(weight initialisation), and the run's own ``numpy.random.Generator`` (sampling, jitter, shuffles) and
albumentations' ``Compose(seed=...)``, which the training code builds from the same seed. A fixed
thread count keeps the order of floating-point sums fixed on the CPU.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["seeded_training"]


@contextmanager
def seeded_training(seed: int, threads: int) -> Iterator[np.random.Generator]:
    """Seed every global stream, fix the thread count, ask torch for deterministic kernels (a warning,
    not an error, where an op has none) and give the run's own generator; the process's thread count
    and determinism setting come back afterwards (a long-lived process trains only now and then)."""
    threads_before = torch.get_num_threads()
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    warn_only_before = torch.is_deterministic_algorithms_warn_only_enabled()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield np.random.default_rng(seed)
    finally:
        torch.use_deterministic_algorithms(deterministic_before, warn_only=warn_only_before)
        torch.set_num_threads(threads_before)
