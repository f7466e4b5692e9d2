"""Bone extraction U-Net (method 1: "Bone structures extraction and enhancement in chest radiographs via
CNN trained on synthetic data", Gozes & Greenspan, ISBI 2019, §2.3): the network.

What it predicts and how its output becomes a bone image: :mod:`cxrdecomp.methods.bone_unet.predict`.
"""

from __future__ import annotations

from cxrdecomp.nn.blocks import UNet


def build(base: int = 32, depth: int = 4, dilate_from: int = 2, **_ignored) -> UNet:
    """The paper's U-Net: 1 channel in and out, ``base`` filters first, dilated deeper levels, tanh out.

    ``base=32, depth=4``: 7.8 M parameters (15.6 MB stored as float16).
    Shape: ``(B, 1, S, S)`` → ``(B, 1, S, S)``, S divisible by ``2**depth``.
    """
    return UNet(1, 1, base=base, depth=depth, dilate_from=dilate_from, out_activation="tanh")
