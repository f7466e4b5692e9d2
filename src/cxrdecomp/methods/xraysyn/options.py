"""Training options of XraySyn (``cxrdecomp train xraysyn``), Peng et al. AAAI 2021 §3."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from cxrdecomp.train.options import TrainOptions, option


@dataclass
class Options(TrainOptions):
    """3DPN (Eq. 8–10) on the deformation bank of a CT: Adam, L_G = λ_CT‖V − V_gt‖₁ + λ_mask BCE + λ_xray(L^T + L^T′);
    then (--stage refine) the 2DRN (Eq. 11–13) on the frozen 3DPN's projections, supervised at T and T′ (L1 of the
    radiograph and of the thicknesses at the render size).

    Samples: the realistic simulation's anatomy variations of the CT, resampled into a cube of --volume-size³
    voxels, rendered by polyenergetic CT2Xray at an input pose T and a novel pose T′ (±--max-angle degrees
    azimuth and elevation); validation on the held-out anatomy bank.
    """

    out: Path = option(Path("runs/xraysyn"), "Run folder: last.ckpt (resume), logs/, metrics.json, model/.", flag="-o")
    stage: str = option("prior", "prior: train the 3DPN; refine: train the 2DRN on a trained, frozen 3DPN (--prior-checkpoint); real: fine-tune the 2DRN on real radiographs (--data, --init-from a refine model; L1 + LSGAN); refiner2d: the paper's 2D Refiner baseline.")
    prior_checkpoint: Optional[Path] = option(None, "Stage refine: the exported 3DPN model (stage prior); the exported model holds both networks.")
    ct: Optional[Path] = option(None, "CT (NIfTI, NRRD/MHA or a DICOM series folder); default: the example CT with its labels.")
    labels: Optional[Path] = option(None, "Label map of --ct (same grid), for the bone groups and lungs.")
    label_names: Optional[Path] = option(None, "structures.csv (columns structure,id) of --labels.")
    config: str = option("small", "Network configuration: small (3DPN-S 64³ ~1.8 M, 2DRN-S ~3.3 M parameters) or full (the paper's: 3DPN 128³ ~111 M, 2DRN ~123 M).")
    volume_size: int = option(64, "Voxels per side of the XraySyn cube (small: 64; the paper: 128).")
    render_size: int = option(128, "Detector pixels per side that CT2Xray renders (pooled to --size).")
    size: int = option(64, "Radiograph size the networks see (the rendering average-pooled to it).")
    projection: str = option("ct2xray", "Radiograph model of the scene: ct2xray (polyenergetic, the paper's) or drr (line integral: the 3DPN-DRR baseline).")
    max_angle: float = option(18.0, "Input pose T: azimuth and elevation uniform in ±this many degrees (paper: 18).")
    novel_angle: float = option(18.0, "Novel pose T′ of the x-ray loss: uniform in ±this many degrees (paper: 18).")
    lambda_ct: float = option(1.0, "λ_CT on the volume L1 (HU / 5000); the paper publishes no λ's.")
    lambda_mask: float = option(0.1, "λ_mask on the bone-mask cross-entropy.")
    lambda_xray: float = option(1.0, "λ_xray on the x-ray losses at T and T′ (images −ln I / 5, thicknesses / 10 g/cm²).")
    epoch_samples: int = option(400, "Fresh samples per epoch.")
    val_samples: int = option(16, "Validation samples (held-out anatomies).")
    n_val_anatomies: int = option(8, "Size of the held-out bank of validation anatomies.")
    batch_size: int = option(4, "Samples per optimiser step.")
    lr: float = option(2e-4, "Adam learning rate (3DPN β = 0.5, 0.999; 2DRN β = 0.5, 0.9 as the paper).")
    style_gamma: float = option(0.4, "Stage refine: the radiograph M sees is (L/5)^γ, γ = exp(±this) uniform: display-style randomisation.")
