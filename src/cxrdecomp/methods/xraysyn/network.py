"""XraySyn (Peng et al., "XraySyn: Realistic View Synthesis From a Single Radiograph Through CT Priors",
AAAI 2021): the networks.

* :class:`PriorNet3D` — the 3D prior network 3DPN (Eq. 8–10): backprojected radiograph → bone mask, bone
  and tissue HU volumes, and their composite ``V = m·b + (1−m)·s``.
* :class:`RefineNet2D` — the 2D refinement network 2DRN (Eq. 11–14): projected material thicknesses
  ``t_CT`` at ``h²`` → refined thicknesses at ``(2h)²``; a residual dense network :class:`RDN` whose 1×1
  filter after global feature fusion is generated per image by :class:`FilterGenerator` (the paper's M).
* :class:`PatchDiscriminator` — the pix2pix PatchGAN of the adversarial term (Eq. 14).

Layouts follow the authors' code (github.com/cpeng93/XraySyn ``networks/``); deviations are in the docstrings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cxrdecomp.errors import ConfigError, InputError

HU_RANGE = (-1000.0, 4000.0)
"""HU interval of the 3DPN's bone/tissue heads: the authors' normalisation ``HU = 5000·v − 1000``, v ∈ [0, 1]."""


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``module``; works on the ``meta`` device."""
    return sum(p.numel() for p in module.parameters())


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise InputError(msg)


def _image(x: torch.Tensor, channels: int, what: str) -> None:
    _need(x.ndim == 4 and x.shape[1] == channels, f"{what} must be (B, {channels}, H, W), got {tuple(x.shape)}")


class PriorNet3D(nn.Module):
    """3DPN (Eq. 8–10): a 3D U-Net from a backprojected radiograph to bone mask, bone HU and tissue HU.

    Layout of the authors' ``UnetGenerator(1, 3, num_downs=6, ngf=96, norm="batch", up="upsample3D")``:
    ``levels`` stride-2 3×3×3 convolutions (BatchNorm3d except on the first, LeakyReLU 0.2; the
    *pre-activation* output is the skip), a decoder of trilinear ×2 upsampling + 3×3×3 convolution +
    BatchNorm3d, concatenated with the skip, then ReLU; a last upsampling + convolution to three channels
    (the heads m, b, s). Outputs are the authors' ``tanh·½ + ½`` mapped to physical units:
    ``m = sigmoid(mask_logit)`` with ``mask_logit = 2·z_m`` (identical to ``½tanh(z_m)+½``),
    ``b = lo + (hi − lo)·sigmoid(2 z_b)``, likewise ``s``, with ``(lo, hi) = hu_range`` (default
    −1000 … 4000 HU, the authors' ``5000·v − 1000``).

    Args:
        in_channels: channels of the backprojected volume (1).
        base: channels of the first level (paper: 96).
        levels: number of stride-2 downsamplings (paper: 6).
        channel_mult: per-level multipliers of ``base`` (default ``min(2**i, 8)``: 1, 2, 4, 8, 8, 8).
        channels: explicit per-level channels (overrides ``base``/``channel_mult``), ``len == levels``.
        hu_range: (lo, hi) HU bounds of the b and s heads.
        spectral_norm: wrap every convolution in spectral normalisation as the authors do (default off:
            the paper does not mention it; it does not change the parameter count).

    Shape:
        ``(B, in_channels, D, H, W)`` with every side divisible by ``2**levels`` → dict of
        ``(B, 1, D, H, W)`` tensors ``mask_logit``, ``mask`` (∈ (0, 1)), ``bone`` and ``tissue`` (HU), and
        ``volume = mask·bone + (1 − mask)·tissue`` (HU).

    Parameters: :meth:`full_config` (128³ input) 111,012,579; :meth:`small_config` (3DPN-S, 64³) 1,760,467.

    Raises:
        ConfigError: ``levels < 1`` or a channel list of the wrong length.
        InputError: (in :meth:`forward`) not a 5-D tensor with ``in_channels`` channels, or a side not
            divisible by ``2**levels``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base: int = 96,
        levels: int = 6,
        channel_mult: tuple[int, ...] | None = None,
        channels: tuple[int, ...] | None = None,
        hu_range: tuple[float, float] = HU_RANGE,
        spectral_norm: bool = False,
    ):
        super().__init__()
        if levels < 1:
            raise ConfigError(f"PriorNet3D needs levels >= 1, got {levels}")
        if channels is None:
            mult = channel_mult if channel_mult is not None else tuple(min(2**i, 8) for i in range(levels))
            channels = tuple(base * m for m in mult)
        ch = tuple(channels)
        if len(ch) != levels:
            raise ConfigError(f"PriorNet3D needs {levels} channel counts (one per level), got {len(ch)}")
        self.in_channels, self.levels, self.channels, self.hu_range = in_channels, levels, ch, tuple(hu_range)

        def conv(cin: int, cout: int, stride: int) -> nn.Module:
            c = nn.Conv3d(cin, cout, 3, stride, 1)
            return nn.utils.parametrizations.spectral_norm(c) if spectral_norm else c

        def up(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False), conv(cin, cout, 1)]

        self.down = nn.ModuleList(
            nn.Sequential(conv(in_channels if i == 0 else ch[i - 1], ch[i], 2), nn.BatchNorm3d(ch[i]) if i else nn.Identity())
            for i in range(levels)
        )
        self.up = nn.ModuleList(
            nn.Sequential(*up(ch[i] if i == levels - 1 else 2 * ch[i], ch[i - 1]), nn.BatchNorm3d(ch[i - 1]))
            for i in range(levels - 1, 0, -1)
        )
        self.head = nn.Sequential(*up(ch[0] if levels == 1 else 2 * ch[0], 3))

    FULL_SIZE, SMALL_SIZE = 128, 64  # input sides of the two configurations

    @staticmethod
    def full_config() -> dict:
        """The paper's 3DPN: 128³ input, 6 downsamplings, 96 base channels (111,012,579 parameters)."""
        return {"base": 96, "levels": 6}

    @staticmethod
    def small_config() -> dict:
        """3DPN-S: 64³ input, five stride-2 levels with 16-32-64-128-128 channels (1,760,467 parameters)."""
        return {"levels": 5, "channels": (16, 32, 64, 128, 128)}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Eq. 8: backprojected volume ``(B, C, D, H, W)`` → ``{mask_logit, mask, bone, tissue, volume}``."""
        k = 2**self.levels
        _need(x.ndim == 5 and x.shape[1] == self.in_channels, f"3DPN input must be (B, {self.in_channels}, D, H, W), got {tuple(x.shape)}")
        _need(all(s % k == 0 and s > 0 for s in x.shape[2:]), f"3DPN volume sides {tuple(x.shape[2:])} must be divisible by 2**levels = {k}")
        skips, h = [], x
        for down in self.down:
            skips.append(down(h))
            h = F.leaky_relu(skips[-1], 0.2)
        for j, up in enumerate(self.up):
            h = F.relu(torch.cat([up(h), skips[-2 - j]], 1))
        z = self.head(h)
        lo, hi = self.hu_range
        mask_logit = 2.0 * z[:, 0:1]
        mask = torch.sigmoid(mask_logit)
        bone, tissue = (lo + (hi - lo) * torch.sigmoid(2.0 * z[:, i : i + 1]) for i in (1, 2))
        volume = mask * bone + (1.0 - mask) * tissue
        return {"mask_logit": mask_logit, "mask": mask, "bone": bone, "tissue": tissue, "volume": volume}


def apply_filter(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-image 1×1 convolution (no bias): ``out[b] = conv2d(x[b], weight[b, :, :, None, None])``.

    Shapes: ``x (B, C_in, H, W)``, ``weight (B, C_out, C_in)`` → ``(B, C_out, H, W)``.

    Raises:
        InputError: batch or channel counts of ``x`` and ``weight`` disagree.
    """
    _need(
        weight.ndim == 3 and x.ndim == 4 and weight.shape[0] == x.shape[0] and weight.shape[2] == x.shape[1],
        f"1x1 filter {tuple(weight.shape)} does not fit features {tuple(x.shape)}: need (B, C_out, C_in)",
    )
    return torch.einsum("boi,bihw->bohw", weight, x)


class _DenseBlock(nn.Module):
    """Residual dense block: ``n_layers`` (3×3 conv + ReLU) densely concatenated, 1×1 local fusion, + input."""

    def __init__(self, features: int, growth: int, n_layers: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(features + i * growth, growth, 3, padding=1) for i in range(n_layers))
        self.fuse = nn.Conv2d(features + n_layers * growth, features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for conv in self.convs:
            h = torch.cat([h, F.relu(conv(h))], 1)
        return x + self.fuse(h)


class RDN(nn.Module):
    """Residual dense network F of the 2DRN (Eq. 12–13), as the authors' ``CT2XrayEst``.

    Shallow features (two 3×3 convs), ``n_blocks`` residual dense blocks of ``n_layers`` convs each
    (growth ``growth``), global feature fusion (1×1 over all block outputs, 3×3, ReLU) plus the global
    residual, then the *final fusion*: a 1×1 filter given per image from outside (``dynamic=True``, the
    paper's M, applied by :func:`apply_filter`) or a learned 1×1 conv (``dynamic=False``); then upsampling
    (3×3 conv to ``growth·scale²`` channels + PixelShuffle, as the authors) and a 3×3 ``tail`` conv.

    Shape: ``(B, in_channels, h, w)`` (+ filter ``(B, features, features)``) → ``(B, out_channels, scale·h, scale·w)``.
    Units: whatever the input carries (the 2DRN feeds thicknesses in g/cm²).

    Parameters (dynamic): 16 blocks × 8 layers, growth 64, 64 features: 22,122,242; 8 × 6, growth 32,
    32 features: 1,672,322 (``dynamic=False`` adds ``features² + features``).

    Raises:
        InputError: (in :meth:`forward`) a wrong input shape, a missing filter when ``dynamic``, or a
            filter given when not.
    """

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 2,
        features: int = 64,
        growth: int = 64,
        n_blocks: int = 16,
        n_layers: int = 8,
        scale: int = 2,
        dynamic: bool = True,
    ):
        super().__init__()
        self.in_channels, self.features, self.dynamic = in_channels, features, dynamic
        self.sfe1 = nn.Conv2d(in_channels, features, 3, padding=1)
        self.sfe2 = nn.Conv2d(features, features, 3, padding=1)
        self.blocks = nn.ModuleList(_DenseBlock(features, growth, n_layers) for _ in range(n_blocks))
        self.gff = nn.Sequential(nn.Conv2d(n_blocks * features, features, 1), nn.Conv2d(features, features, 3, padding=1), nn.ReLU())
        self.fusion = None if dynamic else nn.Conv2d(features, features, 1)
        shuffle = [nn.Conv2d(features, growth * scale**2, 3, padding=1), nn.PixelShuffle(scale)] if scale > 1 else []
        self.upsample = nn.Sequential(*shuffle)  # empty Sequential = identity when scale == 1
        self.tail = nn.Conv2d(growth if scale > 1 else features, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. 12–13: thicknesses ``(B, C, h, w)`` and the per-image filter ``(B, F, F)`` → residual ``(B, C', s·h, s·w)``."""
        _image(x, self.in_channels, "RDN input")
        f1 = self.sfe1(x)
        h, outs = self.sfe2(f1), []
        for block in self.blocks:
            outs.append(h := block(h))
        h = self.gff(torch.cat(outs, 1)) + f1
        if self.dynamic:
            _need(weight is not None, "this RDN fuses with a generated 1x1 filter: pass weight (B, features, features)")
            _need(weight.shape[1:] == (self.features, self.features), f"1x1 filter must be (B, {self.features}, {self.features}), got {tuple(weight.shape)}")
            h = apply_filter(h, weight)
        else:
            _need(weight is None, "this RDN has a learned 1x1 fusion: pass no filter")
            h = self.fusion(h)
        return self.tail(self.upsample(h))


class FilterGenerator(nn.Module):
    """The paper's M (Eq. 12): radiograph I_in → weights of the RDN's per-image 1×1 fusion filter.

    ``len(channels) + 1`` stride-2 3×3 convolutions (ReLU between, as the authors' ``GenWeights``; 8 in
    both configurations), the last one to ``out_features·in_features`` channels, then global average
    pooling (the authors have none: their 256² input reaches 1×1 after 8 stride-2 convs, where the pooling
    is the identity; with it any input size works).

    Shape: ``(B, in_channels, H, W)`` (I_in, display domain) → ``(B, out_features, in_features)``.

    Parameters: full (32 … 2048 → 4096 = 64·64) 100,665,600; small (16-32-64-64-128-128-128 → 1024 = 32·32)
    1,609,920.

    Raises:
        InputError: (in :meth:`forward`) not ``(B, in_channels, H, W)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048),
        out_features: int = 64,
        in_features: int = 64,
    ):
        super().__init__()
        self.in_channels, self.shape = in_channels, (out_features, in_features)
        layers: list[nn.Module] = []
        c = in_channels
        for cout in channels:
            layers += [nn.Conv2d(c, cout, 3, 2, 1), nn.ReLU(inplace=True)]
            c = cout
        layers.append(nn.Conv2d(c, out_features * in_features, 3, 2, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Eq. 12: ``(B, C, H, W)`` radiograph → one 1×1 filter per image ``(B, C_out, C_in)``."""
        _image(image, self.in_channels, "filter generator input")
        return self.net(image).mean(dim=(2, 3)).view(image.shape[0], *self.shape)


class RefineNet2D(nn.Module):
    """2DRN (Eq. 11–14): ``t_ref = up(t_CT) + F(t_CT; M(I_in))``, thicknesses from ``h²`` to ``(scale·h)²``.

    ``up`` is bilinear ×``scale`` with ``align_corners=False`` (the authors' ``nn.Upsample`` default); F is
    an :class:`RDN` with the dynamic 1×1 fusion filter from :class:`FilterGenerator` (``self.generator``)
    on the radiograph I_in (the authors feed I_in at the output resolution, 256², and ``t_CT`` at 128²).
    The RDN's last conv is zero-initialised, so at initialisation ``t_ref == up(t_CT)`` exactly (a
    deviation: the authors keep PyTorch's default initialisation).

    Shape: ``t_ct (B, 2, h, w)`` (bone, tissue; g/cm²), ``image (B, 1, H, W)`` → ``(B, 2, scale·h, scale·w)`` g/cm².

    Parameters: :meth:`full_config` 122,787,842 (RDN 22,122,242 + M 100,665,600); :meth:`small_config`
    3,282,242 (1,672,322 + 1,609,920).

    Raises:
        InputError: (in :meth:`forward`) wrong shapes or different batch sizes of ``t_ct`` and ``image``.
    """

    def __init__(
        self,
        channels: int = 2,
        features: int = 64,
        growth: int = 64,
        n_blocks: int = 16,
        n_layers: int = 8,
        scale: int = 2,
        generator_channels: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048),
        image_channels: int = 1,
    ):
        super().__init__()
        self.channels, self.scale = channels, scale
        self.rdn = RDN(channels, channels, features, growth, n_blocks, n_layers, scale, dynamic=True)
        self.generator = FilterGenerator(image_channels, generator_channels, features, features)
        nn.init.zeros_(self.rdn.tail.weight)
        nn.init.zeros_(self.rdn.tail.bias)

    @staticmethod
    def full_config() -> dict:
        """The authors' 2DRN: RDN 16 blocks × 8 layers, growth 64, 64 features; M with 8 convs 32 … 4096."""
        return {"features": 64, "growth": 64, "n_blocks": 16, "n_layers": 8}

    @staticmethod
    def small_config() -> dict:
        """2DRN-S: RDN 8 blocks × 6 layers × 32 features (growth 32); M 16-32-64-64-128-128-128 → 32·32."""
        return {"features": 32, "growth": 32, "n_blocks": 8, "n_layers": 6, "generator_channels": (16, 32, 64, 64, 128, 128, 128)}

    def upsample(self, t_ct: torch.Tensor) -> torch.Tensor:
        """The residual's base ``up(t_CT)``: bilinear ×scale, ``align_corners=False``."""
        return F.interpolate(t_ct, scale_factor=self.scale, mode="bilinear", align_corners=False)

    def forward(self, t_ct: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Eq. 11: projected thicknesses ``(B, 2, h, w)`` g/cm² and I_in ``(B, 1, H, W)`` → ``t_ref (B, 2, s·h, s·w)``."""
        _image(t_ct, self.channels, "2DRN thicknesses t_CT")
        _need(image.shape[0] == t_ct.shape[0], f"t_CT and I_in batch sizes differ: {t_ct.shape[0]} vs {image.shape[0]}")
        return self.upsample(t_ct) + self.rdn(t_ct, self.generator(image))


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator of the adversarial term (Eq. 14), pix2pix ``NLayerDiscriminator`` layout.

    4×4 convolutions: ``filters`` stride 2 + LeakyReLU 0.2; ``n_layers − 1`` more stride-2 and one stride-1
    with ``filters·min(2**n, 8)`` channels, InstanceNorm2d (no affine, as ``nn.InstanceNorm2d``'s default)
    and LeakyReLU 0.2; a final stride-1 conv to one channel (raw scores, for the LSGAN loss; no sigmoid).

    Shape: ``(B, in_channels, H, W)`` → ``(B, 1, H/2**n_layers − 2, W/2**n_layers − 2)`` (256² → 30²).
    Parameters: 64 filters, 3 layers: 2,762,689.

    Raises:
        InputError: (in :meth:`forward`) not ``(B, in_channels, H, W)``, or a side under ``3·2**n_layers``.
    """

    def __init__(self, in_channels: int = 1, filters: int = 64, n_layers: int = 3):
        super().__init__()
        self.in_channels, self.n_layers = in_channels, n_layers
        layers: list[nn.Module] = [nn.Conv2d(in_channels, filters, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c = filters
        for n in range(1, n_layers + 1):
            cout = filters * min(2**n, 8)
            layers += [nn.Conv2d(c, cout, 4, 2 if n < n_layers else 1, 1), nn.InstanceNorm2d(cout), nn.LeakyReLU(0.2, True)]
            c = cout
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    @staticmethod
    def full_config() -> dict:
        """pix2pix / the authors: 64 filters, 3 layers (2,762,689 parameters); also the small configuration."""
        return {"filters": 64, "n_layers": 3}

    small_config = full_config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 14: image ``(B, C, H, W)`` → patch scores ``(B, 1, h, w)``."""
        _image(x, self.in_channels, "discriminator input")
        m = 3 * 2**self.n_layers
        _need(min(x.shape[2:]) >= m, f"discriminator input sides {tuple(x.shape[2:])} must be at least {m}")
        return self.net(x)


def build_prior(**cfg) -> PriorNet3D:
    """:class:`PriorNet3D` from ``cfg`` (e.g. ``build_prior(**PriorNet3D.small_config())``)."""
    return PriorNet3D(**cfg)


def build_refine(**cfg) -> RefineNet2D:
    """:class:`RefineNet2D` from ``cfg`` (e.g. ``build_refine(**RefineNet2D.small_config())``)."""
    return RefineNet2D(**cfg)


def build_discriminator(**cfg) -> PatchDiscriminator:
    """:class:`PatchDiscriminator` from ``cfg`` (default: 64 filters, 3 layers)."""
    return PatchDiscriminator(**cfg)


class XraySyn(nn.Module):
    """The trained XraySyn system: the 3DPN (``prior``), optionally the 2DRN (``refine``), and its scene.

    ``config.json["model"]`` is ``{"prior": {...}, "refine": {...} | None, "scene": {...}}``: the
    :class:`PriorNet3D` and :class:`RefineNet2D` keyword arguments and the
    :class:`~cxrdecomp.methods.xraysyn.scene.SceneConfig` (geometry, spectrum, calibration) the networks were trained in.

    :meth:`forward` is Eq. 7–8: attenuation-domain radiographs ``(B, 1, h, h)`` (``h = scene.view_size``) at
    ``(B, 2)`` poses (azimuth, elevation, degrees) → the 3DPN's dict (``mask``, ``bone``, ``tissue``, ``volume`` …,
    each ``(B, 1, N, N, N)``). :meth:`render` projects that volume to other poses (Eq. 1–6).
    """

    def __init__(self, prior: dict | None = None, refine: dict | None = None, scene: dict | None = None):
        super().__init__()
        from cxrdecomp.methods.xraysyn.scene import Scene, SceneConfig

        self.prior = PriorNet3D(**(prior if prior is not None else PriorNet3D.small_config()))
        self.refine = RefineNet2D(**refine) if refine else None
        self.scene = Scene(SceneConfig.from_json(scene))

    def forward(self, log: torch.Tensor, angles: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.prior(self.scene.backproject(log, angles))

    def densities(self, pred: dict[str, torch.Tensor]) -> torch.Tensor:
        """Bone and tissue densities ``(B, 2, N, N, N)`` (g/cm³) of a 3DPN output: ``m·ρ(b)`` and ``(1 − m)·ρ(s)``."""
        from cxrdecomp.physics.materials import hu_to_density

        return torch.cat([pred["mask"] * hu_to_density(pred["bone"]), (1.0 - pred["mask"]) * hu_to_density(pred["tissue"])], 1)

    def render(self, pred: dict[str, torch.Tensor], angles: torch.Tensor) -> dict[str, torch.Tensor]:
        """CT2Xray of the predicted volume at ``(B, 2)`` poses: ``thickness (B, 2, h, h)`` g/cm², ``log (B, 1, h, h)``."""
        t = self.scene.thickness(self.densities(pred), angles)
        return {"thickness": t, "log": self.scene.radiograph(t)}


class Refiner2D(nn.Module):
    """The paper's "2D Refiner" baseline (Peng et al. 2021, Table 1): view synthesis without a 3D prior.

    A 2D U-Net (:class:`cxrdecomp.nn.blocks.UNet`, no output activation) maps the reprojection of the backprojected
    input to the novel pose and the input itself, ``[FP(BP(I_in, T), T′)/10, I_in/5]`` (both ≈ ``L/5`` where the
    view does not change), to the radiograph and the material thicknesses at T′: channels ``L/5``, ``t_bone/10``,
    ``t_tissue/10`` (``L = −ln I``, thicknesses g/cm²). It sees the same geometry as the 3DPN but must learn the
    anatomy's depth from 2D data alone.

    :meth:`forward`: attenuation-domain radiographs ``(B, 1, h, h)`` at poses ``T (B, 2)`` → ``{"log": (B, 1, h, h),
    "thickness": (B, 2, h, h)}`` at ``T′ (B, 2)`` (degrees). Not a decomposer: ``decompose`` refuses it.
    """

    def __init__(self, unet: dict | None = None, scene: dict | None = None, baseline: str = "refiner2d"):
        super().__init__()
        from cxrdecomp.methods.xraysyn.scene import Scene, SceneConfig
        from cxrdecomp.nn.blocks import UNet

        self.unet = UNet(**{"in_channels": 2, "out_channels": 3, "base": 32, "depth": 4, "dilate_from": 2,
                            "out_activation": "none", **(unet or {})})
        self.scene = Scene(SceneConfig.from_json(scene))
        self.refine = None

    def inputs(self, log: torch.Tensor, angles: torch.Tensor, novel: torch.Tensor) -> torch.Tensor:
        """The network input ``(B, 2, h, h)``: ``FP(BP(L, T), T′)/10`` and ``L/5``."""
        return self.inputs_from_bp(self.scene.backproject(log, angles), log, novel)

    def inputs_from_bp(self, bp: torch.Tensor, log: torch.Tensor, novel: torch.Tensor) -> torch.Tensor:
        """:meth:`inputs` from the backprojection ``bp (B, 1, N, N, N)`` (``Scene.backproject``) already made."""
        from cxrdecomp.methods.xraysyn.scene import LOG_SCALE

        return torch.cat([self.scene.reproject(bp, novel) / 10.0, log / LOG_SCALE], 1)

    def forward(self, log: torch.Tensor, angles: torch.Tensor, novel: torch.Tensor) -> dict[str, torch.Tensor]:
        from cxrdecomp.methods.xraysyn.scene import LOG_SCALE

        y = self.unet(self.inputs(log, angles, novel))
        return {"log": y[:, :1] * LOG_SCALE, "thickness": y[:, 1:] * 10.0}


def build(**cfg) -> nn.Module:
    """The registry's builder: :class:`XraySyn` from ``config.json["model"]`` (:class:`Refiner2D` for the 2D
    Refiner baseline's checkpoints, whose model config has ``"baseline": "refiner2d"``)."""
    if cfg.get("baseline") == "refiner2d":
        return Refiner2D(**cfg)
    return XraySyn(**cfg)
