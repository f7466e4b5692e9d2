"""Disentanglement autoencoder (DAE) networks: encoder, soft-tissue estimator, bone-segmentation branch.

Source: "Disentanglement AutoEncoder for bone suppression in chest radiographs" (§2.1). Registered as
``dae`` (trained with the bone-segmentation branch) and ``ae`` (the same inference network trained
without it, the paper's plain-autoencoder ablation); both predict the soft-tissue image.

Network (§2.1)::

    x (B,1,S,S) ─ encoder: 4 conv layers (3×3, ReLU), max-pool after the first two,
                  channels base, 2·base, 4·base, 4·base  → features (B, 4·base, S/4, S/4)
                  (S = 512, base = 16: the paper's 128×128×64 features)
       ├─ soft-tissue estimator: 2 stride-2 deconvolutions + 3×3 conv → soft tissue (B,1,S,S)
       └─ bone segmentation branch (training only): same shape → bone-probability logits (B,1,S,S)

Only the encoder and the soft-tissue estimator form the exported network (:class:`DAE`); the bone
branch (:class:`BoneSegBranch`) lives in the training module (:mod:`cxrdecomp.methods.dae.module`) and
never enters a checkpoint, so inference costs exactly what a plain autoencoder costs.

Deviation from the paper (configurable, ``residual``): by default the soft-tissue estimator outputs the
bone layer to remove and ``Ŝ = x − r`` (a global skip connection, last layer zero-initialised so an
untrained model returns its input, BSR 0). The paper's estimator outputs ``Ŝ`` directly
(``residual=False``); on BSE-JSRT, where the identity already scores 38 dB PSNR, a direct autoencoder
with two max-pools cannot reach the identity's error and scores a negative BSR.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(c_in: int, c_out: int, k: int, norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU(inplace=True))
    return layers


def _deconv(c_in: int, c_out: int, norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU(inplace=True))
    return layers


class Encoder(nn.Sequential):
    """DAE encoder (§2.1): 4 conv layers, max-pool after the first two, channels doubled except last.

    Shape: ``(B, 1, S, S)`` → ``(B, 4·base, S/4, S/4)`` (512² → 128×128×64 for ``base = 16``).
    """

    def __init__(self, base: int = 16, kernel: int = 3, norm: bool = False):
        c = [base, 2 * base, 4 * base, 4 * base]
        super().__init__(
            *_conv(1, c[0], kernel, norm), nn.MaxPool2d(2),
            *_conv(c[0], c[1], kernel, norm), nn.MaxPool2d(2),
            *_conv(c[1], c[2], kernel, norm),
            *_conv(c[2], c[3], kernel, norm),
        )
        self.out_channels = c[3]


class Decoder(nn.Sequential):
    """Deconvolution decoder (§2.1): ``(B, 4·base, S/4, S/4)`` → ``(B, 1, S, S)`` (no output activation).

    Two 4×4 stride-2 transposed convolutions (``2·base``, ``base`` channels, ReLU) and a ``kernel``-sized
    convolution to one channel.
    """

    def __init__(self, base: int = 16, kernel: int = 3, norm: bool = False):
        super().__init__(
            *_deconv(4 * base, 2 * base, norm),
            *_deconv(2 * base, base, norm),
            nn.Conv2d(base, 1, kernel, padding=kernel // 2),
        )


class DAE(nn.Module):
    """Inference network of the DAE / AE: encoder + soft-tissue estimator (no bone branch).

    Args:
        base: channels of the first encoder layer (paper: 16, giving 64 feature channels).
        kernel: convolution kernel size (3).
        residual: predict the bone layer ``r`` and return ``x − r`` (default, see module docstring);
            ``False`` returns ``sigmoid(decoder)`` directly as in the paper.
        norm: batch normalisation after each convolution (off in the paper).

    Shape:
        Input ``(B, 1, S, S)`` display domain ``[0, 1]`` with ``S`` divisible by 4 →
        output ``(B, 1, S, S)`` soft-tissue image, display domain.

    Raises:
        ValueError: input height or width not divisible by 4.

    Example:
        >>> DAE(base=4)(torch.rand(2, 1, 64, 64)).shape
        torch.Size([2, 1, 64, 64])
    """

    def __init__(self, base: int = 16, kernel: int = 3, residual: bool = True, norm: bool = False):
        super().__init__()
        self.encoder = Encoder(base, kernel, norm)
        self.soft_decoder = Decoder(base, kernel, norm)
        self.residual = residual
        if residual:
            last = self.soft_decoder[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Shared features ``(B, 4·base, S/4, S/4)`` of display-domain images ``(B, 1, S, S)``."""
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"DAE input size {tuple(x.shape[-2:])} must be divisible by 4")
        return self.encoder(x)

    def soft_from_features(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Soft-tissue image ``(B, 1, S, S)`` (display domain) from the input ``x`` and its features ``h``."""
        y = self.soft_decoder(h)
        return x - y if self.residual else torch.sigmoid(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.soft_from_features(x, self.features(x))


class BoneSegBranch(Decoder):
    """Bone segmentation branch (§2.1, training only): features ``(B, 4·base, S/4, S/4)`` → bone-probability
    *logits* ``(B, 1, S, S)``."""


def build(base: int = 16, kernel: int = 3, residual: bool = True, norm: bool = False) -> DAE:
    """The inference network of ``dae`` and ``ae`` from ``config["model"]`` (keys ``base``, ``kernel``,
    ``residual``, ``norm``; see :class:`DAE`)."""
    return DAE(base=base, kernel=kernel, residual=residual, norm=norm)
