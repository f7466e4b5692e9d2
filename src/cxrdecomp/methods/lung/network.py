"""Lung-structure enhancement networks (method 2: "Lung structures enhancement in chest radiographs
via CT based FCNN training", Gozes & Greenspan 2018, §2.2). Registered as ``lung``.

One checkpoint holds both networks in one :class:`LungNet`:

* ``seg`` — lung segmentation U-Net (§2.2): 32 filters in the first layer, dilated convolutions
  (rate 2) in the deeper levels, no batch norm, ReLU, sigmoid output, a Gaussian-noise layer
  (std 0.2) on its input during training; its output is thresholded at 0.95.
* ``extract`` — lung-structure extraction U-Net (§2.2): same layout, tanh output.

How the two are chained at inference (§2.3): :mod:`cxrdecomp.methods.lung.predict`; training (losses,
augmentation): :mod:`cxrdecomp.methods.lung.module`.
"""

from __future__ import annotations

import torch
from torch import nn

from cxrdecomp.nn.blocks import UNet


class GaussianNoise(nn.Module):
    """Additive Gaussian noise (std ``std``) in training mode only; identity in eval mode.

    Shape: ``(B, C, H, W)`` → same.
    """

    def __init__(self, std: float = 0.2):
        super().__init__()
        self.std = float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.std > 0:
            return x + torch.randn_like(x) * self.std
        return x


class LungNet(nn.Module):
    """The lung segmentation and lung-structure extraction U-Nets in one module.

    Args:
        base: filters of the first level (paper: 32).
        depth: down-sampling steps (4 in a classic U-Net; the bundled checkpoint uses 3 to stay small).
        dilate_from: first level using dilation rate 2.
        noise_std: std of the Gaussian-noise layer before the segmentation U-Net (training only).

    Shape (``S`` divisible by ``2**depth``):
        :meth:`segment`: HE+CLAHE image ``(B, 1, S, S)`` in [0, 1] → lung probability ``(B, 1, S, S)``.
        :meth:`extract_lung`: lung-normalised image ``(B, 1, S, S)`` → lung X-ray ``(B, 1, S, S)`` in (−1, 1)
        (trained on display-domain targets in [0, 1]).

    There is no ``forward``: the two networks are chained (segmentation → lung-area normalisation →
    extraction) by :func:`cxrdecomp.methods.lung.predict.predict`, and trained one at a time.
    """

    def __init__(self, base: int = 32, depth: int = 4, dilate_from: int = 2, noise_std: float = 0.2):
        super().__init__()
        self.noise = GaussianNoise(noise_std)
        self.seg = UNet(1, 1, base=base, depth=depth, dilate_from=dilate_from, out_activation="sigmoid")
        self.extract = UNet(1, 1, base=base, depth=depth, dilate_from=dilate_from, out_activation="tanh")
        # He-normal initialisation (Keras U-Nets' "he_normal"): without batch norm, PyTorch's default
        # init shrinks the signal through the ~20 ReLU layers and training at lr 1e-4 barely starts.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Lung probability of HE+CLAHE images ``(B, 1, S, S)`` (noise added in training mode)."""
        return self.seg(self.noise(x))

    def extract_lung(self, z: torch.Tensor) -> torch.Tensor:
        """Raw lung X-ray in (−1, 1) of lung-area normalised images ``(B, 1, S, S)``."""
        return self.extract(z)


def build(base: int = 32, depth: int = 4, dilate_from: int = 2, noise_std: float = 0.2, **_ignored) -> LungNet:
    """The ``lung`` network from its ``config["model"]`` keyword arguments.

    ``base=32, depth=4``: 2 × 7.8 M parameters; the bundled ``base=16, depth=3``: 2 × 0.5 M.
    """
    return LungNet(base=base, depth=depth, dilate_from=dilate_from, noise_std=noise_std)
