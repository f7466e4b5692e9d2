"""Helpers of several commands: CPU thread setup and loading a method's decomposer."""

from __future__ import annotations

from typing import Optional


def cpu_setup(threads: Optional[int]) -> None:
    """Idle OpenMP threads sleep instead of spinning (set before torch loads; measured >10x faster
    small-tensor ops on a shared, loaded CPU); optional torch thread count."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads:
        import torch

        torch.set_num_threads(threads)


def load_decomposer(method: Optional[str], checkpoint: Optional[str], device: Optional[str], **options):
    """Decomposer of ``checkpoint`` (a folder or bundled name), else of ``method``'s bundled checkpoint
    (``None``: the default method). Returns ``(decomposer, checkpoint name or path)``.

    Raises:
        ConfigError: unknown method or one without a bundled checkpoint. CheckpointError: unusable folder.
    """
    from cxrdecomp import methods
    from cxrdecomp.decomposer import Decomposer

    if checkpoint is None:
        checkpoint = methods.bundled_checkpoint(method)
    opts = {k: v for k, v in options.items() if v is not None}
    return Decomposer.from_pretrained(checkpoint, device=device, **opts), str(checkpoint)
