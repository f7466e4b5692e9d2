"""Training losses shared by the methods: L1, 1 − MS-SSIM, and the VGG16 perceptual loss of the
bone-extraction paper (Eq. 5). A loss only one method uses lives in that method's folder.

The perceptual loss compares ``block2_conv2`` features (after its ReLU, as in Keras' VGG16) of the
prediction and the target, each replicated to 3 channels and normalised with the ImageNet mean/std.
The VGG16 weights are read from a local torchvision-format state dict (``vgg16-397923af.pth``: keys
``features.N.weight`` / ``features.N.bias``) that the user provides; nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from cxrdecomp.errors import DataNotFoundError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's VGG16 "D" configuration; "M" = max-pool
VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
BLOCK2_CONV2_END = 9
"""``features[:9]`` ends with the ReLU after block2_conv2 (conv index 7)."""


def vgg16_features(end: int | None = None) -> nn.Sequential:
    """VGG16 ``features`` layers with torchvision's module indices (so state-dict keys match).

    Args:
        end: keep only ``features[:end]`` (``None``: all 31 layers).
    """
    layers: list[nn.Module] = []
    c = 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
            c = v
    return nn.Sequential(*layers[:end])


def load_vgg16_features(path: str | os.PathLike, end: int = BLOCK2_CONV2_END) -> nn.Sequential:
    """Frozen VGG16 ``features[:end]`` with weights from a torchvision-format state dict file.

    Raises:
        DataNotFoundError: the file does not exist, cannot be read, or lacks the ``features.N`` keys.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataNotFoundError(
            f"VGG16 weights file {path} not found: give a torchvision ImageNet VGG16 state dict "
            "(e.g. vgg16-397923af.pth) with --vgg-weights; cxrdecomp downloads nothing"
        )
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataNotFoundError(f"cannot read VGG16 weights {path}: {e}") from e
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    net = vgg16_features(end)
    want = {f"features.{k}": v for k, v in net.state_dict().items()}
    missing = [k for k in want if k not in state]
    if missing:
        raise DataNotFoundError(f"{path} is not a torchvision VGG16 state dict: missing {missing[:4]}")
    net.load_state_dict({k[len("features."):]: state[k] for k in want}, strict=True)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


class PerceptualLoss(nn.Module):
    """Bone-extraction paper Eq. 5: ``mean |φ(ŷ) − φ(y)|²`` with φ = VGG16 block2_conv2 features.

    Inputs ``(B, 1, H, W)`` (display domain) are replicated to 3 channels and ImageNet-normalised.

    Args:
        weights: path of the torchvision VGG16 state dict.
        criterion: ``"mse"`` (Eq. 5) or ``"l1"``.
    """

    def __init__(self, weights: str | os.PathLike, criterion: str = "mse"):
        super().__init__()
        self.features = load_vgg16_features(weights)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.criterion = nn.MSELoss() if criterion == "mse" else nn.L1Loss()

    def train(self, mode: bool = True):  # the VGG stays in eval mode
        super().train(mode)
        self.features.eval()
        return self

    def _phi(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x.expand(-1, 3, -1, -1) - self.mean) / self.std)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.criterion(self._phi(pred), self._phi(target))


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (paper §2.3)."""
    return (pred - target).abs().mean()


def ms_ssim_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 − MS-SSIM`` (Wang et al. 2003; 5 scales, weights :data:`cxrdecomp.metrics.MS_SSIM_WEIGHTS`, data
    range 1) of display-domain images ``(B, 1, H, W)``; differentiable (pytorch-msssim). The Gaussian window
    shrinks from 11 px for images under 161 px (:func:`cxrdecomp.metrics.ms_ssim_window`).

    Used by the DAE (Eq. 2–4) and BS-Diff stage 2 (Eq. 5).

    Raises:
        InputError: images of 32 px or less.
    """
    from pytorch_msssim import ms_ssim

    from cxrdecomp.metrics import MS_SSIM_WEIGHTS, ms_ssim_window

    win = ms_ssim_window(min(pred.shape[-2:]))
    return 1.0 - ms_ssim(pred.float(), target.float(), data_range=1.0, size_average=True, win_size=win, weights=list(MS_SSIM_WEIGHTS))
