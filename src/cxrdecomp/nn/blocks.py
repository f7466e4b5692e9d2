"""Small building blocks shared by the methods' networks."""

from __future__ import annotations

import torch
from torch import nn


class ConvBlock(nn.Sequential):
    """Two 3×3 convolutions with ReLU (optionally dilated, optionally batch-normalised).

    Shape: ``(B, C_in, H, W)`` → ``(B, C_out, H, W)``.
    """

    def __init__(self, c_in: int, c_out: int, dilation: int = 1, norm: bool = False):
        layers: list[nn.Module] = []
        for i in range(2):
            layers.append(nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=dilation, dilation=dilation, bias=not norm))
            if norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class UNet(nn.Module):
    """U-Net with dilated convolutions in its deeper levels.

    The network of the bone-extraction paper §2.3 (and, with a sigmoid head, the lung-segmentation
    U-Net of the lung-enhancement paper §2.2): ``base`` filters in the first layer, doubled at each of
    ``depth`` down-sampling steps; levels ``>= dilate_from`` use dilation rate 2 to enlarge the
    receptive field; ReLU activations; output activation ``"tanh"``, ``"sigmoid"`` or ``"none"``.

    Args:
        in_channels, out_channels: image channels.
        base: filters of the first level (paper: 32).
        depth: number of 2× down-sampling steps (input size must be divisible by ``2**depth``).
        dilate_from: first level (0-based) whose convolutions are dilated (rate 2).
        out_activation: ``"tanh"`` | ``"sigmoid"`` | ``"none"``.
        norm: batch normalisation after each convolution.

    Shape:
        Input ``(B, in_channels, H, W)`` → Output ``(B, out_channels, H, W)``.

    Example:
        >>> net = UNet(base=8, depth=3)
        >>> net(torch.zeros(1, 1, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base: int = 32,
        depth: int = 4,
        dilate_from: int = 2,
        out_activation: str = "tanh",
        norm: bool = False,
    ):
        super().__init__()
        self.depth = depth
        ch = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        c = in_channels
        for i in range(depth + 1):
            self.down.append(ConvBlock(c, ch[i], dilation=2 if i >= dilate_from else 1, norm=norm))
            c = ch[i]
        self.pool = nn.MaxPool2d(2)
        self.upconv = nn.ModuleList()
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):
            self.upconv.append(nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2))
            self.up.append(ConvBlock(2 * ch[i], ch[i], dilation=2 if i >= dilate_from else 1, norm=norm))
        self.head = nn.Conv2d(ch[0], out_channels, 1)
        self.out_activation = out_activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2**self.depth or x.shape[-2] % 2**self.depth:
            raise ValueError(f"input size {tuple(x.shape[-2:])} must be divisible by {2 ** self.depth}")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth:
                skips.append(x)
                x = self.pool(x)
        for upconv, block in zip(self.upconv, self.up):
            x = upconv(x)
            x = block(torch.cat([x, skips.pop()], dim=1))
        x = self.head(x)
        if self.out_activation == "tanh":
            return torch.tanh(x)
        if self.out_activation == "sigmoid":
            return torch.sigmoid(x)
        return x
