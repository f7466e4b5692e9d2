"""Learning-rate schedules driven by training progress (steps or the wall-time budget, whichever is further).

``progress`` is :meth:`cxrdecomp.train.MethodModule.progress`: ``max(step / total_steps, elapsed /
budget)`` in ``[0, 1]``, so a run bounded by ``--max-minutes`` still anneals to the end of its schedule.
"""

from __future__ import annotations

import math
from typing import Callable


def warmup_cosine(progress: Callable[[int], float], warmup: float = 0.0, floor: float = 0.01) -> Callable[[int], float]:
    """LR factor for ``torch.optim.lr_scheduler.LambdaLR``: linear warm-up over the first ``warmup`` of
    training, then a cosine from 1 down to ``floor`` at progress 1.

    Args:
        progress: step → training progress in ``[0, 1]``.
        warmup: fraction of training spent warming up (0: none).
        floor: final factor.

    Returns:
        step → factor in ``[min(floor, 1e-3), 1]``.
    """

    def factor(step: int) -> float:
        p = min(1.0, max(0.0, float(progress(step))))
        if warmup > 0 and p < warmup:
            return max(p / warmup, 1e-3)
        q = (p - warmup) / max(1e-8, 1.0 - warmup)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, q)))

    return factor
