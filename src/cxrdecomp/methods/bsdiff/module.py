"""BS-Diff training (``cxrdecomp train bsdiff``): the two stages' LightningModules and :func:`train`.

Chen et al., "BS-Diff", ISBI 2024:

* **Stage 1** (§2.2, :class:`BSDiffStage1`): the conditional DDPM, loss ``‖ε − ε_θ(x_t, t, I)‖²``
  (Eq. 3; or its x0 / v variant), AdamW, EMA of the U-Net (exported).
* **Stage 2** (§2.3–2.4, :class:`BSDiffStage2`): the enhancement autoencoder on the stage-1 DDIM outputs,
  ``L = 1.0·MAE + 1.0·(1 − MS-SSIM) + 0.001·perceptual(VGG16) + 0.01·adversarial`` (Eq. 5) against a
  MONAI ``PatchDiscriminator`` (pix2pixHD-style, least-squares GAN), manual optimisation.

Both use :func:`cxrdecomp.train.schedules.warmup_cosine` (2 % warm-up, cosine to 5 %; paper: step decay)
driven by :meth:`cxrdecomp.train.MethodModule.progress`, so a ``--max-minutes`` run anneals to its end,
and validate with :func:`cxrdecomp.metrics.suppression_metrics` (display domain, model size).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from cxrdecomp.errors import CheckpointError, ConfigError, DataNotFoundError
from cxrdecomp.methods.bsdiff.data import BSDiffPairs, load_split
from cxrdecomp.methods.bsdiff.diffusion import DEFAULT_STEPS
from cxrdecomp.methods.bsdiff.network import BSDiff, build
from cxrdecomp.methods.bsdiff.options import Options
from cxrdecomp.methods.bsdiff.predict import condition
from cxrdecomp.metrics import suppression_metrics
from cxrdecomp.nn.losses import ms_ssim_loss
from cxrdecomp.train import MethodModule, fit
from cxrdecomp.train.ema import make_ema
from cxrdecomp.train.schedules import warmup_cosine

STAGE2_WEIGHTS = {"mae": 1.0, "ms_ssim": 1.0, "perceptual": 0.001, "adversarial": 0.01}
"""λ of the stage-2 generator loss terms (paper Eq. 5)."""


def _warmup_cosine(module: MethodModule):
    return warmup_cosine(lambda s: module.progress(s), warmup=0.02, floor=0.05)


def _log_suppression(module: MethodModule, pred01: torch.Tensor, batch: dict, prefix: str = "val/") -> dict[str, torch.Tensor]:
    """Log ``{prefix}{bsr,rmae,psnr,ssim}`` (batch means) of display-domain soft tissue ``pred01`` against
    the batch's ``soft`` and ``cxr``; returns the per-image ``(B,)`` metrics."""
    m = suppression_metrics(pred01, (batch["soft"] + 1) / 2, batch["cxr"])
    bs = pred01.shape[0]
    for k, v in m.items():
        module.log(f"{prefix}{k}", v.float().mean(), sync_dist=True, batch_size=bs, prog_bar=(k == "bsr" and prefix == "val/"))
    return m


class BSDiffStage1(MethodModule):
    """Stage 1 (conditional DDPM): AdamW, warm-up + cosine LR, EMA of the U-Net.

    Validation logs ``val/loss`` (noise MSE with fixed noise and timesteps, EMA U-Net) and, sampling with
    ``val_steps`` DDIM steps from the EMA U-Net, ``val/bsr``, ``val/rmae``, ``val/psnr``, ``val/ssim``.
    The exported checkpoint holds the EMA weights; its enhancer is untrained (``enhance=False``).

    Args:
        model_config: :func:`cxrdecomp.methods.bsdiff.network.build` keyword arguments.
        input_size: training size (square pixels). lr, weight_decay: AdamW. ema_decay: EMA decay.
        val_steps: DDIM steps of the validation samples (0: noise loss only).
        use_clahe: CLAHE on the conditioning radiograph (stored as the inference default).
    """

    method = "bsdiff"
    card_summary = (
        "BS-Diff stage 1 (conditional DDPM, Chen et al. ISBI 2024) trained on radiograph / soft-tissue pairs. "
        "Enhancer (stage 2) not trained in this checkpoint."
    )

    def __init__(self, model_config: dict[str, Any], *, input_size: int = 256, lr: float = 1e-4, ema_decay: float = 0.995, val_steps: int = 10,
                 use_clahe: bool = True, weight_decay: float = 1e-2):
        super().__init__()
        from monai.inferers import DiffusionInferer

        self.model_config = dict(model_config)
        self.input_size = int(input_size)
        self.inference_defaults = {"steps": DEFAULT_STEPS, "sampler": "ddim", "seed": 0, "enhance": False, "clahe": use_clahe}
        self.net = build(**self.model_config)
        self.net.enhancer.requires_grad_(False)
        self.ema = make_ema(self.net.unet, ema_decay)
        self.inferer = DiffusionInferer(self.net.scheduler("ddpm"))
        self.lr, self.wd, self.val_steps = lr, weight_decay, int(val_steps)

    def export_config(self, metrics, training):
        cfg = super().export_config(metrics, training)
        cfg["dtype"] = "float16"
        cfg["stage"] = 1
        return cfg

    def training_step(self, batch, batch_idx):
        loss = self.net.noise_loss(batch["soft"], batch["cond"], inferer=self.inferer, cxr=batch["cxr"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["soft"].shape[0])
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=batch["soft"].shape[0])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.ema.update_parameters(self.net.unet)

    def validation_step(self, batch, batch_idx):
        soft, cond = batch["soft"], batch["cond"]
        gen = torch.Generator().manual_seed(1000 + batch_idx)
        noise = torch.randn(soft.shape, generator=gen).to(soft)
        t = torch.randint(0, self.net.num_train_timesteps, (soft.shape[0],), generator=gen).to(soft.device)
        loss = self.net.noise_loss(soft, cond, noise=noise, timesteps=t, inferer=self.inferer, cxr=batch["cxr"], unet=self.ema.module)
        self.log("val/loss", loss, sync_dist=True, batch_size=soft.shape[0])
        if self.val_steps:
            y = self.net.sample(cond, steps=self.val_steps, sampler="ddim", seed=batch_idx, unet=self.ema.module, cxr=batch["cxr"])
            _log_suppression(self, (y + 1) / 2, batch)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.net.unet.parameters(), lr=self.lr, weight_decay=self.wd)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_cosine(self))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_fit_end(self):
        if self.ema.n_averaged.item() > 0:
            self.net.unet.load_state_dict(self.ema.module.state_dict())


class BSDiffStage2(MethodModule):
    """Stage 2 (enhancement autoencoder), manual optimisation of generator and critic.

    Generator loss (paper Eq. 5): ``λ_mae·|Ŝ−S|₁ + λ_ms-ssim·(1 − MS-SSIM) + λ_perc·L_VGG + λ_adv·L_adv``
    with λ = :data:`STAGE2_WEIGHTS` (1, 1, 0.001, 0.01) by default; ``perceptual=None`` switches the VGG16
    term off. The discriminator is MONAI's ``PatchDiscriminator`` with the least-squares GAN loss
    (pix2pixHD). Validation logs ``val/{bsr,rmae,psnr,ssim}`` of the EMA enhancer's output and
    ``val/stage1_*`` of its input (the paper's Table 2 ablation); the exported default applies the
    enhancer only where it did not lower validation BSR.

    Args:
        net: the :class:`~cxrdecomp.methods.bsdiff.network.BSDiff` with a trained stage-1 U-Net (frozen here).
        model_config: its ``build`` keyword arguments. input_size: training size.
        lr, d_lr: AdamW learning rates of the enhancer and the discriminator. ema_decay: EMA decay.
        weights: overrides of :data:`STAGE2_WEIGHTS`. perceptual: a :class:`cxrdecomp.nn.losses.PerceptualLoss`
            or ``None``. use_clahe: the inference default. stage1_info: recorded in ``config.json["stage2"]``.
    """

    method = "bsdiff"
    card_summary = (
        "BS-Diff (Chen et al. ISBI 2024): stage 1 conditional DDPM + stage 2 enhancement autoencoder, trained on "
        "radiograph / soft-tissue pairs. Sampling: DDIM (default 20 steps) or DDPM (1000 steps)."
    )

    def __init__(self, net: BSDiff, model_config: dict[str, Any], *, input_size: int = 256, lr: float = 1e-4, d_lr: float = 5e-4,
                 ema_decay: float = 0.995, weights: dict[str, float] | None = None, perceptual: nn.Module | None = None,
                 use_clahe: bool = True, stage1_info: dict | None = None):
        super().__init__()
        from monai.losses import PatchAdversarialLoss
        from monai.networks.nets import PatchDiscriminator

        self.automatic_optimization = False
        self.model_config = dict(model_config)
        self.input_size = int(input_size)
        self.inference_defaults = {"steps": DEFAULT_STEPS, "sampler": "ddim", "seed": 0, "enhance": True, "clahe": use_clahe}
        self.lam = {**STAGE2_WEIGHTS, **(weights or {})}
        self.net = net.train()
        self.net.unet.requires_grad_(False)
        self.ema = make_ema(self.net.enhancer, ema_decay)
        self.disc = PatchDiscriminator(spatial_dims=2, channels=32, in_channels=1, out_channels=1, num_layers_d=3, norm="BATCH")
        self.adv = PatchAdversarialLoss(criterion="least_squares")
        self.perceptual = perceptual
        self.lr, self.d_lr = lr, d_lr
        self.stage1_info = stage1_info or {}

    def _enhancer_helps(self, metrics) -> bool:
        b, b1 = metrics.get("val/bsr"), metrics.get("val/stage1_bsr")
        return b is None or b1 is None or float(b) >= float(b1)

    def export_config(self, metrics, training):
        cfg = super().export_config(metrics, training)
        cfg["dtype"] = "float16"
        cfg["stage"] = 2
        cfg["stage2"] = {"weights": self.lam, "perceptual": self.perceptual is not None, **self.stage1_info}
        cfg["inference"] = {**cfg["inference"], "enhance": self._enhancer_helps(metrics)}
        return cfg

    def model_card(self, metrics, training, n_params, size_mb):
        card = super().model_card(metrics, training, n_params, size_mb)
        s1 = {k: v for k, v in metrics.items() if "stage1_" in k}
        extra = ["## Stage 2 losses", "", f"- λ: {self.lam}",
                 f"- VGG16 perceptual term: {'on' if self.perceptual is not None else 'OFF (no weights file given)'}",
                 (f"- Stage-1 checkpoint: {self.stage1_info.get('stage1_checkpoint', '')}; "
                  f"stage-2 inputs made with DDIM-{self.stage1_info.get('gen_steps', '')}"),
                 "", "## Ablation (paper Table 2): validation without the enhancer", ""]
        extra += [f"- {k.replace('stage1_', '')} without enhancer: {v:.4g}" for k, v in sorted(s1.items())] or ["- (not measured)"]
        extra += ["", "Default: " + ("the enhancer is applied (`enhance: true`): it did not lower validation BSR." if self._enhancer_helps(metrics) else
                                     "the enhancer is NOT applied (`enhance: false`): it lowered validation BSR; `enhance=True` turns it on.")]
        return card + "\n".join(extra) + "\n"

    def training_step(self, batch, batch_idx):
        lam = self.lam
        opt_g, opt_d = self.optimizers()
        src, soft = batch["source"], batch["soft"]
        bs = src.shape[0]
        out = self.net.enhancer(src)
        out01, soft01 = (out.clamp(-1, 1) + 1) / 2, (soft + 1) / 2
        l_mae = F.l1_loss(out01, soft01)
        l_ms = ms_ssim_loss(out01, soft01)
        loss_g = lam["mae"] * l_mae + lam["ms_ssim"] * l_ms
        if self.perceptual is not None and lam["perceptual"]:
            l_p = self.perceptual(out01, soft01)
            loss_g = loss_g + lam["perceptual"] * l_p
            self.log("train/perceptual", l_p, batch_size=bs)
        l_adv = self.adv(self.disc(out.contiguous())[-1], target_is_real=True, for_discriminator=False)
        loss_g = loss_g + lam["adversarial"] * l_adv
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()

        d_fake = self.adv(self.disc(out.detach().contiguous())[-1], target_is_real=False, for_discriminator=True)
        d_real = self.adv(self.disc(soft.contiguous())[-1], target_is_real=True, for_discriminator=True)
        loss_d = lam["adversarial"] * 0.5 * (d_fake + d_real)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()
        for s in self.lr_schedulers():
            s.step()
        self.ema.update_parameters(self.net.enhancer)
        self.log_dict({"train/loss": loss_g, "train/mae": l_mae, "train/ms_ssim": l_ms, "train/adv_g": l_adv, "train/d": loss_d},
                      prog_bar=False, batch_size=bs)
        self.log("train/loss_g", loss_g, prog_bar=True, batch_size=bs)

    def validation_step(self, batch, batch_idx):
        src = batch["source"]
        out = self.ema.module(src).clamp(-1, 1)
        m = _log_suppression(self, (out + 1) / 2, batch)
        _log_suppression(self, (src + 1) / 2, batch, prefix="val/stage1_")
        self.log("val/loss", F.l1_loss((out + 1) / 2, (batch["soft"] + 1) / 2), sync_dist=True, batch_size=src.shape[0])
        return m

    def configure_optimizers(self):
        params = [p for p in self.net.enhancer.parameters() if p.requires_grad]
        opt_g = torch.optim.AdamW(params, lr=self.lr)
        opt_d = torch.optim.AdamW(self.disc.parameters(), lr=self.d_lr)
        # manual optimisation: both schedulers step once per training batch, so their count is the batch count
        f = _warmup_cosine(self)
        return [opt_g, opt_d], [torch.optim.lr_scheduler.LambdaLR(opt_g, f), torch.optim.lr_scheduler.LambdaLR(opt_d, f)]

    def progress(self, step=None):
        # with two optimizers Lightning's global_step counts both steps of a batch
        return super().progress(step if step is not None else self.global_step // 2)

    def on_fit_end(self):
        if self.ema.n_averaged.item() > 0:
            self.net.enhancer.load_state_dict(self.ema.module.state_dict())


def _ints(text: str, name: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ConfigError(f"--{name.replace('_', '-')} must be comma-separated integers such as 32,64,128; got {text!r}") from None


def model_overrides(o: Options) -> dict[str, Any]:
    """The :func:`~cxrdecomp.methods.bsdiff.network.build` keyword arguments set by the model options of ``o``
    (``channels`` → ``channels``, ``attention_levels`` "0,1" → ``[False, True]``, ``norm_groups`` →
    ``norm_num_groups``, ``res_blocks`` → ``num_res_blocks``, ``prediction`` → ``prediction_type``,
    ``target``, ``condition``); unset options are left out.

    Raises:
        ConfigError: a width or attention list that is not comma-separated integers.
    """
    model: dict[str, Any] = {}
    if o.channels:
        model["channels"] = _ints(o.channels, "channels")
    if o.attention_levels:
        model["attention_levels"] = [bool(v) for v in _ints(o.attention_levels, "attention_levels")]
    if o.enhancer_channels:
        model["enhancer_channels"] = _ints(o.enhancer_channels, "enhancer_channels")
    if o.norm_groups:
        model["norm_num_groups"] = int(o.norm_groups)
    for key, value in (("num_res_blocks", o.res_blocks), ("prediction_type", o.prediction), ("target", o.target), ("condition", o.condition)):
        if value is not None:
            model[key] = value
    return model


def _stage1_outputs(net: BSDiff, cxr: torch.Tensor, steps: int, use_clahe: bool, device: torch.device, batch: int = 16) -> torch.Tensor:
    """Stage-1 DDIM outputs (display domain) of ``cxr`` ``(N, 1, S, S)``, seeded per image index."""
    net = net.to(device).eval()
    outs = []
    for i in range(0, len(cxr), batch):
        x = cxr[i : i + batch].to(device)
        y = net.sample(condition(net, x, use_clahe), steps=steps, sampler="ddim", seed=i, cxr=x)
        outs.append(((y + 1) / 2).float().cpu())
    return torch.cat(outs)


def _perceptual(path: Path | None) -> nn.Module | None:
    if path is None:
        print("bsdiff: no VGG16 weights given (--perceptual-weights): the perceptual loss term is OFF", file=sys.stderr)
        return None
    from cxrdecomp.nn.losses import PerceptualLoss

    return PerceptualLoss(path)


def train(o: Options) -> Path:
    """Train one BS-Diff stage on paired folders and export ``OUT/model`` (options: :class:`Options`).

    Stage 1 trains the conditional DDPM; stage 2 loads a stage-1 checkpoint (``o.stage1``, default
    ``OUT/../stage1/model``), computes its DDIM-``gen_steps`` outputs for every pair once (cached in
    ``OUT/stage1_outputs.pt``), then trains the enhancer on (stage-1 output → soft tissue). Both write
    checkpoints and logs and resume through :func:`cxrdecomp.train.fit`. On CUDA the default precision is
    ``bf16-mixed``.

    Returns:
        The exported checkpoint folder ``OUT/model`` (stage 2: both stages).

    Raises:
        DataNotFoundError: data folder or VGG16 weights file missing. ConfigError: bad options.
        CheckpointError: stage 2 without a usable bsdiff stage-1 checkpoint.
    """
    from cxrdecomp.data.loaders import make_loader
    from cxrdecomp.data.pairs import default_bse_jsrt
    from cxrdecomp.io.atomic import atomic_path

    stage = int(o.stage)
    if stage not in (1, 2):
        raise ConfigError(f"stage must be 1 or 2, got {stage}")
    overrides = model_overrides(o)
    root = Path(o.data) if o.data else default_bse_jsrt()
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise DataNotFoundError(f"{root} must hold train/ and val/ folders of cxr/ + soft/ pairs (e.g. bse-jsrt); pass --data")
    size, out = int(o.size), Path(o.out)
    L.seed_everything(int(o.seed), workers=True, verbose=False)
    tr_cxr, tr_soft = load_split(root, "train", size, o.limit_pairs)
    va_cxr, va_soft = load_split(root, "val", size, o.limit_pairs)
    data_desc = f"{root} (train {len(tr_cxr)} pairs, val {len(va_cxr)} pairs) at {size}², CLAHE={o.clahe}, augment={o.augment}; stage {stage}"
    cuda = torch.cuda.is_available() and o.accelerator in ("auto", "gpu", "cuda")
    precision = o.precision or ("bf16-mixed" if cuda else "32-true")

    if stage == 1:
        model_config = dict(overrides)
        use_clahe = bool(o.clahe)
        module: MethodModule = BSDiffStage1(model_config, input_size=size, lr=float(o.lr), ema_decay=float(o.ema), val_steps=int(o.val_steps),
                                            use_clahe=use_clahe)
        if size % module.net.divisor:
            raise ConfigError(f"size {size} must be divisible by {module.net.divisor}")
        sources: dict[str, torch.Tensor | None] = {"train": None, "val": None}
    else:
        from cxrdecomp import methods

        perceptual = _perceptual(o.perceptual_weights)
        s1 = Path(o.stage1) if o.stage1 else out.parent / "stage1" / "model"
        try:
            net, cfg1 = methods.load(s1)
        except CheckpointError as e:
            raise CheckpointError(f"stage 2 needs a trained stage-1 checkpoint (--stage1): {e}") from e
        if cfg1.get("method") != "bsdiff":
            raise CheckpointError(f"{s1} is a {cfg1.get('method')!r} checkpoint, not bsdiff")
        if int(cfg1.get("input_size", size)) != size:
            raise ConfigError(f"stage-1 checkpoint runs at {cfg1.get('input_size')}², but --size is {size}")
        model_config = {**cfg1.get("model", {}), **overrides}
        if overrides:  # e.g. enhancer widths: rebuild, keep the stage-1 U-Net
            new = build(**model_config)
            new.unet.load_state_dict(net.unet.state_dict())
            net = new
        net = net.float()
        gen_steps = int(o.gen_steps)
        use_clahe = bool(cfg1.get("inference", {}).get("clahe", o.clahe))
        cache = out / "stage1_outputs.pt"
        key = {"stage1": str(s1.resolve()), "steps": gen_steps, "size": size, "n": (len(tr_cxr), len(va_cxr))}
        cached = torch.load(cache, weights_only=False) if cache.is_file() else None
        if cached is None or cached.get("key") != key:
            dev = torch.device("cuda" if cuda else "cpu")
            print(f"bsdiff: stage-1 DDIM-{gen_steps} outputs for {len(tr_cxr) + len(va_cxr)} images ...", file=sys.stderr)
            t0 = time.time()
            cached = {"key": key, "train": _stage1_outputs(net, tr_cxr, gen_steps, use_clahe, dev),
                      "val": _stage1_outputs(net, va_cxr, gen_steps, use_clahe, dev)}
            out.mkdir(parents=True, exist_ok=True)
            with atomic_path(cache) as tmp:
                torch.save(cached, tmp)
            print(f"bsdiff: done in {time.time() - t0:.1f} s", file=sys.stderr)
        net = net.cpu()
        info = {"stage1_checkpoint": str(s1), "stage1_metrics": cfg1.get("metrics", {}), "stage1_training": cfg1.get("training", {}), "gen_steps": gen_steps}
        module = BSDiffStage2(net, model_config, input_size=size, lr=float(o.lr), d_lr=float(o.d_lr), ema_decay=float(o.ema),
                              perceptual=perceptual, use_clahe=use_clahe, stage1_info=info)
        sources = {"train": cached["train"], "val": cached["val"]}

    cmode = str(model_config.get("condition", "clahe"))
    train_ds = BSDiffPairs(tr_cxr, tr_soft, sources["train"], augment=bool(o.augment), use_clahe=use_clahe, repeats=int(o.repeats), condition=cmode)
    val_ds = BSDiffPairs(va_cxr, va_soft, sources["val"], use_clahe=use_clahe, condition=cmode)
    bs = int(o.batch_size)
    train_loader = make_loader(train_ds, bs, shuffle=True, num_workers=int(o.num_workers))
    val_loader = make_loader(val_ds, max(bs, 4), shuffle=False, num_workers=int(o.num_workers))
    return fit(module, train_loader, val_loader, o, data_description=data_desc, precision=precision)
