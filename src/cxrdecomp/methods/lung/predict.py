"""Inference of the lung-structure method (Gozes & Greenspan 2018, §2.3–2.4).

Normalise to [0, 1], HE + CLAHE (:func:`cxrdecomp.preprocess.he_clahe`), segment, normalise the lung
area to mean 0 / std 0.5 (:func:`cxrdecomp.preprocess.lung_normalize`), extract, rescale the lung X-ray
to [0, 1]. :class:`cxrdecomp.decomposer.Decomposer` then fuses ``I_enhanced = I + w·I_lung`` (Eq. 6) at
full resolution, for ``w`` and each of the optional ``w_levels``.
"""

from __future__ import annotations

import torch

from cxrdecomp.methods.lung.network import LungNet
from cxrdecomp.preprocess import he_clahe, lung_normalize, normalize01

LUNG_THRESHOLD = 0.95
"""Threshold of the lung probability for the lung-area normalisation mask (paper §2.3)."""


def predict(model: LungNet, x: torch.Tensor, options: dict) -> dict[str, torch.Tensor]:
    """Lung X-ray and lung probability of radiographs (lung paper §2.3).

    Args:
        model: a :class:`~cxrdecomp.methods.lung.network.LungNet`.
        x: ``(B, 1, S, S)`` display domain ``[0, 1]`` at the model size.
        options: ``lung_threshold`` (default :data:`LUNG_THRESHOLD`) for the lung-area normalisation mask.

    Returns:
        ``{"lung": (B, 1, S, S) lung X-ray rescaled to [0, 1] per image (display domain),
        "lung_mask": (B, 1, S, S) lung probability}``. When the thresholded mask is (nearly) empty,
        the lung-area normalisation falls back to whole-image statistics.
    """
    pre = he_clahe(x)
    prob = model.segment(pre)
    raw = model.extract_lung(lung_normalize(pre, prob > float(options.get("lung_threshold", LUNG_THRESHOLD))))
    return {"lung": normalize01(raw), "lung_mask": prob}
