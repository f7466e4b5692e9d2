"""Training of XraySyn's 3D prior network (``cxrdecomp train xraysyn``), Peng et al. AAAI 2021 §3.1, Eq. 8–10.

Each step: backproject the input radiograph (Eq. 7), predict bone mask, bone HU and tissue HU (Eq. 8), render the
prediction by CT2Xray at the input pose T and the novel pose T′ (Eq. 1–6, the differentiable projector) and minimise
``L_G = λ_CT‖V − V_gt‖₁/5000 + λ_mask BCE(m, m_gt) + λ_xray (L_xray^T + L_xray^T′)`` (:func:`prior_loss`,
:func:`xray_loss`). Validation (held-out anatomies) logs the paper's Table 1 quantities: PSNR/SSIM of the
radiograph ``I_CT``, ``t_bone`` and ``t_tissue`` at T and at T′ (each image divided by its ground truth's maximum,
data range 1); ``scripts/xraysyn_eval.py`` scores the bundled model beside the baselines on the same samples.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from cxrdecomp import metrics
from cxrdecomp.methods.xraysyn.losses import PriorWeights, prior_loss, xray_loss
from cxrdecomp.methods.xraysyn.network import PriorNet3D, XraySyn
from cxrdecomp.methods.xraysyn.options import Options
from cxrdecomp.methods.xraysyn.scene import LOG_SCALE, QUANTILES, Scene, SceneConfig
from cxrdecomp.train import MethodModule, fit
from cxrdecomp.train.schedules import warmup_cosine

THICKNESS_SCALE = 10.0
"""g/cm² dividing the thicknesses inside the x-ray loss (tissue 0 … ~30, bone 0 … ~5)."""
VIEWS = ("T", "T'")


def _cosine(module: MethodModule, opt):
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(module.progress, warmup=0.0, floor=0.05))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def view_metrics(pred: dict[str, torch.Tensor], gt: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Table 1 quantities of one view: ``{psnr,ssim}_{image,bone,tissue}`` per image ``(B,)``.

    ``pred``/``gt`` hold ``log (B, 1, h, w)`` and ``thickness (B, 2, h, w)``; every image is divided by the maximum of
    its ground truth, so that PSNR and SSIM use data range 1 as the paper's normalised images.
    """
    out = {}
    for name, p, t in (("image", pred["log"], gt["log"]), ("bone", pred["thickness"][:, :1], gt["thickness"][:, :1]),
                       ("tissue", pred["thickness"][:, 1:2], gt["thickness"][:, 1:2])):
        s = t.amax(dim=(-2, -1), keepdim=True).clamp(min=1e-6)
        m = metrics.image_metrics((p / s).clamp(0, 1).float(), (t / s).float(), data_range=1.0, with_ms_ssim=False)
        out[f"psnr_{name}"], out[f"ssim_{name}"] = m["psnr"], m["ssim"]
    return out


class PriorModule(MethodModule):
    """LightningModule of the 3DPN (module docstring)."""

    method = "xraysyn"
    card_summary = (
        "XraySyn 3D prior network (3DPN, Peng et al., AAAI 2021, Eq. 8–10), trained on the deformation bank of a CT "
        "rendered by polyenergetic cone-beam CT2Xray. Input: a frontal chest radiograph; output: a volume of bone mask, "
        "bone HU and tissue HU from which novel views (`cxrdecomp views`) and, by reversing CT2Xray (Algorithm 1), a "
        "bone-suppressed image are rendered."
    )

    def __init__(self, prior: dict, scene: dict, lr: float = 2e-4, lambda_ct: float = 1.0, lambda_mask: float = 0.1,
                 lambda_xray: float = 1.0):
        super().__init__()
        self.save_hyperparameters()
        self.model_config = {"prior": prior, "refine": None, "scene": scene}
        self.net = XraySyn(**self.model_config)
        self.input_size = int(scene.get("view_size", 64))
        self.inference_defaults = {"w": 1.0, "w_s": 1.0, "channels_last": False}  # 3-D convolutions: no channels-last
        self.lr = lr
        self.weights = PriorWeights(ct=lambda_ct, mask=lambda_mask, xray=lambda_xray)
        if scene.get("projection") == "drr":
            self.card_summary = (
                "The 3DPN-DRR baseline of XraySyn (Peng et al., AAAI 2021, Table 1): the 3D prior network trained on "
                "line-integral DRRs instead of polyenergetic CT2Xray, to measure what the realistic physics adds "
                "(scripts/xraysyn_eval.py --drr).")

    def _step(self, batch):
        ang, log, th = batch["angles"], batch["log"], batch["thickness"]
        pred = self.net.prior(batch["bp"])
        terms, renders = [], []
        for v in range(2):
            r = self.net.render(pred, ang[:, v])
            renders.append(r)
            t_gt = th[:, v] / THICKNESS_SCALE
            t_pr = r["thickness"] / THICKNESS_SCALE
            terms.append(xray_loss(r["log"] / LOG_SCALE, log[:, v] / LOG_SCALE, {"bone": t_pr[:, :1], "tissue": t_pr[:, 1:]},
                                   {"bone": t_gt[:, :1], "tissue": t_gt[:, 1:]}))
        loss, parts = prior_loss(pred, {"volume": batch["hu"], "mask": batch["mask"]}, self.weights, terms)
        return loss, parts, renders

    def training_step(self, batch, batch_idx):
        loss, parts, _ = self._step(batch)
        n = batch["bp"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        for k, v in parts.items():
            self.log(f"train/{k}", v, batch_size=n)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, parts, renders = self._step(batch)
        n = batch["bp"].shape[0]
        self.log("val/loss", loss, sync_dist=True, batch_size=n)
        self.log("val/ct_hu_mae", parts["ct"] * self.weights.hu_scale, sync_dist=True, batch_size=n)
        for v, r in enumerate(renders):
            gt = {"log": batch["log"][:, v], "thickness": batch["thickness"][:, v]}
            tag = "T" if v == 0 else "Tn"
            for k, val in view_metrics(r, gt).items():
                self.log(f"val/{k}_{tag}", val.mean(), sync_dist=True, prog_bar=(k == "psnr_image" and v == 1), batch_size=n)

    def configure_optimizers(self):
        """Adam; learning rate cosine-annealed per step to 5 % at the end of the epochs or of the time budget."""
        return _cosine(self, torch.optim.Adam(self.net.parameters(), lr=self.lr, betas=(0.5, 0.999)))


class _Float16Export(MethodModule):
    """Modules exporting both networks (3DPN + 2DRN): weights stored as float16."""

    def export_config(self, metrics, training):
        cfg = super().export_config(metrics, training)
        cfg["dtype"] = "float16"  # 3DPN-S + 2DRN-S: 5.0 M parameters, 10 MB instead of 20
        return cfg


class RefineModule(_Float16Export):
    """LightningModule of the 2DRN (Eq. 11–13) on a frozen, trained 3DPN (first training phase: simulated radiographs).

    Per view v ∈ {T, T′}: ``t_ref = R(t_CT^v, I_in)`` with ``t_CT^v`` the 3DPN's projection at the view size and ``I_in``
    the input radiograph at the render size, display-style randomised (``(L/5)^γ``); loss
    ``Σ_v ‖CT2Xray(t_ref)/5 − L_gt^v/5‖₁ + ‖t_ref − t_gt^v‖₁/10`` at the render size. Deviation: the paper's LSGAN
    term (Eq. 14) belongs to its second phase on real radiographs, not trained here.
    """

    method = "xraysyn"
    card_summary = (
        "XraySyn (Peng et al., AAAI 2021): the 3D prior network (3DPN, Eq. 8–10) and the 2D refinement network (2DRN, "
        "Eq. 11–13) trained on the deformation bank of a CT rendered by polyenergetic cone-beam CT2Xray. Input: a frontal "
        "chest radiograph; output: refined bone and tissue thicknesses at any pose, novel views (`cxrdecomp views`) and, "
        "by reversing CT2Xray (Algorithm 1), a bone-suppressed image."
    )

    def __init__(self, prior_checkpoint: str, refine: dict, lr: float = 1e-4, style_gamma: float = 0.4):
        super().__init__()
        from cxrdecomp import checkpoint

        self.save_hyperparameters()
        cfg = checkpoint.load_config(prior_checkpoint)
        if cfg.get("method") != "xraysyn":
            from cxrdecomp.errors import ConfigError

            raise ConfigError(f"--prior-checkpoint {prior_checkpoint} is a {cfg.get('method')!r} model, not an XraySyn 3DPN")
        self.model_config = {"prior": cfg["model"]["prior"], "refine": refine, "scene": cfg["model"]["scene"]}
        self.net = XraySyn(**self.model_config)
        prior_only = XraySyn(cfg["model"]["prior"], None, cfg["model"]["scene"])
        checkpoint.load_weights(prior_checkpoint, prior_only)
        self.net.prior.load_state_dict(prior_only.prior.state_dict())
        self.net.prior.requires_grad_(False)
        self.upstream_checkpoints = (str(prior_checkpoint),)
        self.input_size = int(cfg["model"]["scene"]["render_size"])
        self.inference_defaults = {"w": 1.0, "w_s": 1.0, "channels_last": False}
        self.lr, self.style_gamma = lr, float(style_gamma)

    def on_train_batch_start(self, batch, batch_idx):
        self.net.prior.eval()  # frozen, BatchNorm statistics included
        return super().on_train_batch_start(batch, batch_idx)

    def _step(self, batch, style: bool = True):
        ang, bp = batch["angles"], batch["bp"]
        with torch.no_grad():
            pred = self.net.prior(bp)
            t_ct = [self.net.render(pred, ang[:, v])["thickness"] for v in range(2)]
        x = (batch["log_hr"][:, 0] / LOG_SCALE).clamp(min=0)
        if style:
            g = torch.exp((torch.rand(x.shape[0], 1, 1, 1, device=x.device) * 2 - 1) * self.style_gamma)
            x = x.clamp(min=1e-6) ** g
        loss, out = 0.0, []
        for v in range(2):
            t_ref = self.net.refine(t_ct[v], x)
            log = self.net.scene.radiograph(t_ref.clamp(min=0))
            loss = loss + (log - batch["log_hr"][:, v]).abs().mean() / LOG_SCALE
            loss = loss + (t_ref - batch["thickness_hr"][:, v]).abs().mean() / THICKNESS_SCALE
            out.append({"log": log, "thickness": t_ref, "prior": t_ct[v]})
        return loss, out

    def training_step(self, batch, batch_idx):
        loss, _ = self._step(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["bp"].shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        import torch.nn.functional as F

        loss, out = self._step(batch, style=False)
        n = batch["bp"].shape[0]
        self.log("val/loss", loss, sync_dist=True, batch_size=n)
        for v, r in enumerate(out):
            tag = "T" if v == 0 else "Tn"
            gt = {"log": batch["log_hr"][:, v], "thickness": batch["thickness_hr"][:, v]}
            for k, val in view_metrics(r, gt).items():
                self.log(f"val/{k}_{tag}", val.mean(), sync_dist=True, prog_bar=(k == "psnr_image" and v == 1), batch_size=n)
            up = self.net.refine.upsample(r["prior"])  # the 3DPN alone at the same size: what the 2DRN must beat
            base = {"log": self.net.scene.radiograph(up), "thickness": up}
            self.log(f"val/prior_psnr_image_{tag}", view_metrics(base, gt)["psnr_image"].mean(), sync_dist=True, batch_size=n)

    def configure_optimizers(self):
        """Adam (β = 0.5, 0.9 as the paper); learning rate cosine-annealed per step to 5 % at the end of the budget."""
        return _cosine(self, torch.optim.Adam(self.net.refine.parameters(), lr=self.lr, betas=(0.5, 0.9)))


class RealRefineModule(_Float16Export):
    """Second 2DRN phase (Eq. 13–14, the authors' ``ct2xray_real_gan_meta``): fine-tuning on real radiographs.

    Starts from an exported XraySyn with a 2DRN (``--init-from``, e.g. the bundled ``xraysyn``); the 3DPN stays frozen.
    Per real radiograph ``x`` (display domain, at the render size): calibration and 3DPN as at inference
    (:func:`~cxrdecomp.methods.xraysyn.predict.calibrated_prior`), ``I_final`` = the 2DRN-refined rendering at the frontal
    pose mapped back to the display domain, and a rendering at a random novel pose T′ (±``novel_angle``) that the
    PatchGAN judges against real radiographs. Generator: ``L1(I_final, x) + 0.02·LSGAN_G + 0.005·L1(bone)``
    (:func:`~cxrdecomp.methods.xraysyn.losses.refine_loss`); discriminator: LSGAN (Eq. 14); both Adam 1e-4-scale,
    β = (0.5, 0.9), constant LR. Validation: input-view reconstruction PSNR/SSIM of held-out radiographs, beside the
    3DPN alone (its projection upsampled).
    """

    method = "xraysyn"
    card_summary = (
        "XraySyn (Peng et al., AAAI 2021): the 3D prior network (3DPN, Eq. 8–10) and the 2D refinement network (2DRN, "
        "Eq. 11–14) trained on the deformation bank of a CT rendered by polyenergetic cone-beam CT2Xray, then the 2DRN "
        "fine-tuned on real radiographs (L1 + LSGAN, the paper's second phase). Input: a frontal chest radiograph; output: "
        "refined bone and tissue thicknesses at any pose, novel views (`cxrdecomp views`) and, by reversing CT2Xray "
        "(Algorithm 1), a bone-suppressed image."
    )

    def __init__(self, init_from: str, lr: float = 1e-4, novel_angle: float = 9.0):
        from cxrdecomp import checkpoint
        from cxrdecomp.errors import ConfigError
        from cxrdecomp.methods.xraysyn.network import PatchDiscriminator

        cfg = checkpoint.load_config(init_from)
        if cfg.get("method") != "xraysyn" or not (cfg.get("model") or {}).get("refine"):
            raise ConfigError(f"--stage real needs --init-from an XraySyn model with a 2DRN (--stage refine), not {init_from}")
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.model_config = cfg["model"]
        self.net = XraySyn(**self.model_config)
        self.net.prior.requires_grad_(False)
        self.disc = PatchDiscriminator(**PatchDiscriminator.full_config())
        self.input_size = int(self.model_config["scene"]["render_size"])
        self.inference_defaults = {"w": 1.0, "w_s": 1.0, "channels_last": False}
        self.lr, self.novel_angle = lr, float(novel_angle)

    def _render(self, x):
        from cxrdecomp.methods.xraysyn.predict import calibrated_prior, frontal
        from cxrdecomp.methods.xraysyn.scene import uncalibrate

        with torch.no_grad():
            a, b, pred = calibrated_prior(self.net, x)
            novel = (torch.rand(x.shape[0], 2, device=x.device) * 2 - 1) * self.novel_angle
            t0, tn = (self.net.render(pred, ang)["thickness"] for ang in (frontal(x), novel))
        show = lambda t: uncalibrate(self.net.scene.radiograph(t.clamp(min=0)), a, b)  # noqa: E731
        ref0, refn = self.net.refine(t0, x), self.net.refine(tn, x)
        return {"final": show(ref0), "novel": show(refn), "bone_ref": ref0[:, :1], "bone_ct": t0[:, :1],
                "prior": show(self.net.refine.upsample(t0))}

    def training_step(self, batch, batch_idx):
        from cxrdecomp.methods.xraysyn.losses import lsgan_d_loss, refine_loss

        opt_g, opt_d = self.optimizers()
        x = batch["image"]
        r = self._render(x)
        loss, parts = refine_loss(r["final"], x, self.disc(r["novel"]), bone_ref=r["bone_ref"], bone_target=r["bone_ct"])
        opt_g.zero_grad()
        self.manual_backward(loss)
        opt_g.step()
        d_loss = lsgan_d_loss(self.disc(x), self.disc(r["novel"].detach()))
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        n = x.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/d_loss", d_loss, batch_size=n)
        for k, v in parts.items():
            self.log(f"train/{k}", v, batch_size=n)

    def validation_step(self, batch, batch_idx):
        x = batch["image"]
        r = self._render(x)
        n = x.shape[0]
        for tag, img in (("", r["final"]), ("prior_", r["prior"])):
            m = metrics.image_metrics(img.clamp(0, 1), x, data_range=1.0, with_ms_ssim=False)
            self.log(f"val/{tag}psnr_input_view", m["psnr"].mean(), sync_dist=True, prog_bar=not tag, batch_size=n)
            self.log(f"val/{tag}ssim_input_view", m["ssim"].mean(), sync_dist=True, batch_size=n)

    def on_train_batch_start(self, batch, batch_idx):
        self.net.prior.eval()  # frozen, BatchNorm statistics included
        return super().on_train_batch_start(batch, batch_idx)

    def configure_optimizers(self):
        """Adam (β = 0.5, 0.9 as the paper) for the 2DRN and the discriminator; constant LR."""
        return [torch.optim.Adam(self.net.refine.parameters(), lr=self.lr, betas=(0.5, 0.9)),
                torch.optim.Adam(self.disc.parameters(), lr=self.lr, betas=(0.5, 0.9))]


class Refiner2DModule(MethodModule):
    """LightningModule of the paper's 2D Refiner baseline (:class:`~cxrdecomp.methods.xraysyn.network.Refiner2D`).

    Same samples, poses and optimiser as the 3DPN; loss at T′ only (the baseline has no volume):
    ``‖L̂/5 − L_gt/5‖₁ + ‖t̂ − t_gt‖₁/10`` with ``t`` the bone and tissue thicknesses at the view size.
    """

    method = "xraysyn"
    card_summary = (
        "The 2D Refiner baseline of XraySyn (Peng et al., AAAI 2021, Table 1): a 2D U-Net from the reprojected "
        "backprojection FP(BP(I, T), T′) and the input I to the radiograph and bone/tissue thicknesses at the novel "
        "pose T′, trained on the same deformation bank as the 3DPN. A baseline for scripts/xraysyn_eval.py, not a "
        "decomposer."
    )

    def __init__(self, scene: dict, unet: dict | None = None, lr: float = 2e-4):
        super().__init__()
        self.save_hyperparameters()
        self.model_config = {"baseline": "refiner2d", "unet": dict(unet or {}), "scene": scene}
        from cxrdecomp.methods.xraysyn.network import Refiner2D

        self.net = Refiner2D(**self.model_config)
        self.input_size = int(scene.get("view_size", 64))
        self.inference_defaults = {"channels_last": False}
        self.lr = lr

    def _step(self, batch):
        ang = batch["angles"]
        with torch.no_grad():
            x = self.net.inputs_from_bp(batch["bp"], batch["log"][:, 0], ang[:, 1])
        y = self.net.unet(x)
        loss = (y[:, :1] - batch["log"][:, 1] / LOG_SCALE).abs().mean() + (y[:, 1:] - batch["thickness"][:, 1] / THICKNESS_SCALE).abs().mean()
        return loss, {"log": y[:, :1] * LOG_SCALE, "thickness": y[:, 1:] * THICKNESS_SCALE}

    def training_step(self, batch, batch_idx):
        loss, _ = self._step(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["bp"].shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        loss, out = self._step(batch)
        n = batch["bp"].shape[0]
        self.log("val/loss", loss, sync_dist=True, batch_size=n)
        gt = {"log": batch["log"][:, 1], "thickness": batch["thickness"][:, 1]}
        for k, val in view_metrics(out, gt).items():
            self.log(f"val/{k}_Tn", val.mean(), sync_dist=True, prog_bar=(k == "psnr_image"), batch_size=n)

    def configure_optimizers(self):
        """Adam (β = 0.5, 0.999 as the 3DPN); learning rate cosine-annealed per step to 5 % at the end of the budget."""
        return _cosine(self, torch.optim.Adam(self.net.unet.parameters(), lr=self.lr, betas=(0.5, 0.999)))


def calibration_quantiles(bank, n: int = 8) -> tuple[float, float]:
    """Mean attenuation-domain image quantiles (:data:`QUANTILES`) of ``n`` training anatomies of a
    :class:`~cxrdecomp.methods.xraysyn.data.DeformationBank` at the frontal pose (the target range of
    :func:`~cxrdecomp.methods.xraysyn.scene.calibrate`)."""
    scene = Scene(bank.config)
    qs = []
    for i in range(n):
        hu, mask = bank.volume(bank.anatomy(i * bank.sim.anatomy_reuse, "train"))
        log = scene.render(hu[None], mask[None], torch.zeros(1, 2))["log"]
        qs.append(torch.quantile(log.flatten(), torch.tensor(QUANTILES)))
    q = torch.stack(qs).mean(0)
    return float(f"{float(q[0]):.4g}"), float(f"{float(q[1]):.4g}")


def build_data(o: Options):
    """Training and validation datasets and the scene of the options (the example CT by default)."""
    from cxrdecomp.io.ct import example_ct, read_ct
    from cxrdecomp.methods.xraysyn.data import DeformationBank, XraySynSamples, fit_cube
    from cxrdecomp.simulate.pipeline import check_ct

    ct = read_ct(o.ct, o.labels, o.label_names) if o.ct is not None else example_ct()
    check_ct(ct)
    cfg = SceneConfig(volume_size=int(o.volume_size), cube_mm=fit_cube(ct), render_size=int(o.render_size), view_size=int(o.size),
                      projection=o.projection)
    bank = DeformationBank(ct, cfg, n_val_anatomies=o.n_val_anatomies, seed=int(o.seed))
    cfg = bank.config = dataclasses.replace(cfg, calibration=calibration_quantiles(bank))
    train_ds = XraySynSamples(bank, o.epoch_samples, "train", o.max_angle, o.novel_angle)
    val_ds = XraySynSamples(bank, o.val_samples, "val", o.max_angle, o.novel_angle)
    return train_ds, val_ds, cfg, ct


def train(o: Options) -> Path:
    """Train the 3DPN; returns the exported checkpoint folder ``OUT/model``.

    Raises:
        ConfigError: unknown configuration, or a volume size the network cannot take.
        InputError / DataNotFoundError: an unreadable or unusable CT.
    """
    from cxrdecomp.errors import ConfigError

    if o.stage not in ("prior", "refine", "real", "refiner2d"):
        raise ConfigError(f"--stage must be prior, refine, real or refiner2d, not {o.stage!r}")
    if o.stage == "real":
        return _train_real(o)
    if o.stage == "refine":
        return _train_refine(o)
    if o.stage == "refiner2d":
        return _train_refiner2d(o)
    configs = {"small": PriorNet3D.small_config(), "full": PriorNet3D.full_config()}
    if o.config not in configs:
        raise ConfigError(f"--config must be one of {sorted(configs)}, not {o.config!r}")
    prior = {k: (list(v) if isinstance(v, tuple) else v) for k, v in configs[o.config].items()}
    k = 2 ** prior["levels"]
    if int(o.volume_size) % k:
        raise ConfigError(f"--volume-size {o.volume_size} must be divisible by 2**levels = {k} of the {o.config} 3DPN")
    torch.manual_seed(int(o.seed))
    train_ds, val_ds, cfg, ct = build_data(o)
    module = PriorModule(prior, cfg.to_json(), lr=o.lr, lambda_ct=o.lambda_ct, lambda_mask=o.lambda_mask, lambda_xray=o.lambda_xray)
    train_loader, val_loader = _loaders(o, train_ds, val_ds)
    return fit(module, train_loader, val_loader, o, data_description=_bank_description(o, cfg, ct), use_distributed_sampler=False)


def _bank_description(o: Options, cfg: SceneConfig, ct) -> str:
    """The model card's data line of a run on a CT's deformation bank (stages prior and refiner2d)."""
    name = "the example CT" if o.ct is None else (getattr(ct, "source", "") or str(o.ct))
    physics = f"CT2Xray {cfg.kvp:g} kVp" if cfg.projection == "ct2xray" else f"line-integral DRRs (3DPN-DRR baseline; {cfg.kvp:g} kVp µ/ρ)"
    return (f"deformation bank of {name} in a {cfg.cube_mm:.0f} mm cube at {cfg.volume_size}³, {physics} at "
            f"{cfg.render_size}² pooled to {cfg.view_size}², poses ±{o.max_angle:g}° (T) / ±{o.novel_angle:g}° (T′); "
            f"{o.epoch_samples} fresh samples per epoch, validation {o.val_samples} samples of {o.n_val_anatomies} held-out anatomies")


def _train_real(o: Options) -> Path:
    """Stage real: the 2DRN fine-tuned on the real radiographs of ``o.data`` (the last tenth held out for validation)."""
    from cxrdecomp.errors import ConfigError, DataNotFoundError
    from cxrdecomp.data.loaders import make_loader
    from cxrdecomp.methods.xraysyn.data import RealRadiographs

    if o.init_from is None:
        raise ConfigError("--stage real needs --init-from an XraySyn model with a 2DRN (e.g. xraysyn)")
    if o.data is None:
        raise ConfigError("--stage real needs --data: a folder of real radiographs (PNG, or one with cxr/), e.g. bse-jsrt/train")
    folder = Path(o.data) / "cxr" if (Path(o.data) / "cxr").is_dir() else Path(o.data)
    files = sorted(folder.glob("*.png"))
    if len(files) < 4:
        raise DataNotFoundError(f"--data {o.data}: {len(files)} PNG radiographs found, need at least 4")
    torch.manual_seed(int(o.seed))
    module = RealRefineModule(str(o.init_from), lr=o.lr, novel_angle=o.novel_angle)
    n_val = max(1, len(files) // 10)
    size = module.input_size
    train_ds, val_ds = RealRadiographs(files[:-n_val], size), RealRadiographs(files[-n_val:], size)
    train_loader = make_loader(train_ds, o.batch_size, shuffle=True, num_workers=o.num_workers, drop_last=True)
    val_loader = make_loader(val_ds, o.batch_size, shuffle=False, num_workers=o.num_workers)
    desc = (f"{len(train_ds)} real radiographs of {folder} (validation: its last {n_val}) at {size}², the 2DRN fine-tuned with "
            f"L1 at the input view + 0.02·LSGAN on novel views (±{o.novel_angle:g}°), the 3DPN frozen")
    return fit(module, train_loader, val_loader, o, data_description=desc)


def _train_refiner2d(o: Options) -> Path:
    """Stage refiner2d: the paper's 2D Refiner baseline on the same deformation bank and poses as the 3DPN."""
    torch.manual_seed(int(o.seed))
    train_ds, val_ds, cfg, ct = build_data(o)
    module = Refiner2DModule(cfg.to_json(), lr=o.lr)
    train_loader, val_loader = _loaders(o, train_ds, val_ds)
    return fit(module, train_loader, val_loader, o, data_description=_bank_description(o, cfg, ct), use_distributed_sampler=False)


def _loaders(o: Options, train_ds, val_ds):
    from cxrdecomp.data.loaders import make_loader
    from cxrdecomp.data.online import EpochSampler

    return (make_loader(train_ds, o.batch_size, shuffle=False, num_workers=o.num_workers, drop_last=True, sampler=EpochSampler(len(train_ds))),
            make_loader(val_ds, o.batch_size, shuffle=False, num_workers=o.num_workers, sampler=EpochSampler(len(val_ds), fixed=True)))


def _train_refine(o: Options) -> Path:
    """Stage refine: the 2DRN on the frozen 3DPN of ``o.prior_checkpoint``, in that checkpoint's scene."""
    from cxrdecomp import checkpoint
    from cxrdecomp.errors import ConfigError
    from cxrdecomp.io.ct import example_ct, read_ct
    from cxrdecomp.methods.xraysyn.data import DeformationBank, XraySynSamples
    from cxrdecomp.methods.xraysyn.network import RefineNet2D

    if o.prior_checkpoint is None:
        raise ConfigError("--stage refine needs --prior-checkpoint (the exported model of a --stage prior run)")
    configs = {"small": RefineNet2D.small_config(), "full": RefineNet2D.full_config()}
    if o.config not in configs:
        raise ConfigError(f"--config must be one of {sorted(configs)}, not {o.config!r}")
    refine = {k: (list(v) if isinstance(v, tuple) else v) for k, v in configs[o.config].items()}
    torch.manual_seed(int(o.seed))
    module = RefineModule(str(o.prior_checkpoint), refine, lr=o.lr, style_gamma=o.style_gamma)
    cfg = SceneConfig.from_json(module.model_config["scene"])
    prior_opts = checkpoint.load_config(o.prior_checkpoint)["training"]["options"]
    ct_path = o.ct if o.ct is not None else prior_opts.get("ct")
    ct = read_ct(ct_path, o.labels or prior_opts.get("labels"), o.label_names or prior_opts.get("label_names")) if ct_path else example_ct()
    bank = DeformationBank(ct, cfg, n_val_anatomies=int(prior_opts.get("n_val_anatomies", o.n_val_anatomies)), seed=int(prior_opts.get("seed", o.seed)))
    train_ds = XraySynSamples(bank, o.epoch_samples, "train", o.max_angle, o.novel_angle, high_res=True)
    val_ds = XraySynSamples(bank, o.val_samples, "val", o.max_angle, o.novel_angle, high_res=True)
    train_loader, val_loader = _loaders(o, train_ds, val_ds)
    desc = (f"the frozen 3DPN {o.prior_checkpoint} on the deformation bank of {'the example CT' if ct_path is None else ct_path} "
            f"(its held-out anatomies for validation); 2DRN {cfg.view_size}² → {cfg.render_size}², poses ±{o.max_angle:g}° / "
            f"±{o.novel_angle:g}°, display style γ = exp(±{o.style_gamma:g}); {o.epoch_samples} fresh samples per epoch")
    return fit(module, train_loader, val_loader, o, data_description=desc, use_distributed_sampler=False)
