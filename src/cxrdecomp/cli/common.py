"""Helpers of several commands: CPU thread setup and loading a method's decomposer."""

from __future__ import annotations

from typing import Optional

from cxrdecomp.errors import ConfigError


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


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"k/n"`` → ``(k, n)`` with ``0 ≤ k < n``; ``None`` → ``(0, 1)``.

    Raises:
        ConfigError: not of that form.
    """
    if text is None:
        return 0, 1
    try:
        k, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"--shard must be K/N with 0 ≤ K < N (e.g. 0/4), not {text!r}") from None
    if not 0 <= k < n:
        raise ConfigError(f"--shard must be K/N with 0 ≤ K < N (e.g. 0/4), not {text!r}")
    return k, n
