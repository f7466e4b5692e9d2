"""The lung-structure paper's CAD check at the size of the data here: does a nodule classifier do better on
enhanced (or bone-suppressed) radiographs than on the originals?

The paper (Gozes & Greenspan 2018, §3.3) trains a CNN on 67k NIH ChestX-ray14 images and reports AP for mass
36.8 → 39.7 with its lung-enhanced images. Here the JSRT cases of ``bse-jsrt`` carry the only labels: names
``JPCLN…`` have a lung nodule, ``JPCNN…`` do not (118 cases, 33 with nodules). With so few, a held-out split of
12 says nothing, so :func:`cross_validate` scores every case out of fold (stratified k-fold, repeated), with the
same folds and seeds for every image variant, so the variants are compared on paired predictions; AUC and AP come
with percentile bootstrap intervals (:func:`bootstrap`) and the paired bootstrap of the difference to the
original images.

Classifier: MONAI's ``Classifier`` (strided convolutions with residual units), trained from scratch with
class-balanced BCE, Adam, flips and small shifts. Metrics: torchmetrics' ``binary_auroc`` and
``binary_average_precision``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cxrdecomp.errors import InputError


def jsrt_nodule_labels(names: Sequence[str]) -> np.ndarray:
    """1 for JSRT case names with a lung nodule (``JPCLN…``), 0 without (``JPCNN…``).

    Raises:
        InputError: a name that is neither.
    """
    out = []
    for n in names:
        if n.startswith("JPCLN"):
            out.append(1)
        elif n.startswith("JPCNN"):
            out.append(0)
        else:
            raise InputError(f"{n!r} is not a JSRT case name (JPCLNnnn = nodule, JPCNNnnn = no nodule)")
    return np.asarray(out, dtype=np.int64)


@dataclass
class CADSettings:
    """Classifier and protocol settings (defaults: what 2 CPU cores run in minutes)."""

    size: int = 96
    channels: tuple[int, ...] = (8, 16, 32, 64)
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    folds: int = 5
    repeats: int = 1
    seed: int = 0


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index ``(N,)`` in ``range(k)``, each class spread evenly over the folds (shuffled by ``seed``)."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        fold[idx] = np.arange(len(idx)) % k
    return fold


def _classifier(s: CADSettings) -> torch.nn.Module:
    from monai.networks.nets import Classifier

    return Classifier(in_shape=(1, s.size, s.size), classes=1, channels=s.channels, strides=(2,) * len(s.channels))


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=g) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    shift = (torch.rand(x.shape[0], 2, generator=g) - 0.5) * 0.1
    theta = torch.zeros(x.shape[0], 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def train_and_score(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, s: CADSettings, seed: int) -> torch.Tensor:
    """Train one classifier on ``train_x (N, 1, S, S)`` / ``train_y (N,)`` and return nodule probabilities of ``test_x``."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = _classifier(s)
    opt = torch.optim.Adam(net.parameters(), lr=s.lr)
    pos = float(train_y.sum())
    pos_weight = torch.tensor((len(train_y) - pos) / max(pos, 1.0))
    for _ in range(s.epochs):
        net.train()
        perm = torch.randperm(len(train_x), generator=g)
        for i in range(0, len(perm), s.batch_size):
            b = perm[i : i + s.batch_size]
            if len(b) < 2:
                continue
            logit = net(_augment(train_x[b], g)).view(-1)
            loss = F.binary_cross_entropy_with_logits(logit, train_y[b].float(), pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        return torch.sigmoid(net(test_x).view(-1))


def cross_validate(images: torch.Tensor, labels: np.ndarray, s: CADSettings = CADSettings(),
                   progress: Callable[[str], None] | None = None) -> np.ndarray:
    """Out-of-fold nodule probability of every image ``(N,)``, averaged over ``s.repeats`` stratified k-fold splits.

    Args:
        images: ``(N, 1, S, S)`` display domain ``[0, 1]`` (each image is standardised to mean 0, std 1 first).
        labels: ``(N,)`` 0/1.

    Raises:
        InputError: fewer than ``s.folds`` images of a class, or a shape mismatch.
    """
    if images.ndim != 4 or images.shape[0] != len(labels):
        raise InputError(f"images must be (N, 1, S, S) with one label each, got {tuple(images.shape)} and {len(labels)} labels")
    if min(int((labels == 1).sum()), int((labels == 0).sum())) < s.folds:
        raise InputError(f"cross-validation with {s.folds} folds needs at least {s.folds} images of each class")
    x = images.float()
    x = (x - x.mean((1, 2, 3), keepdim=True)) / x.std((1, 2, 3), keepdim=True).clamp_min(1e-6)
    y = torch.from_numpy(labels)
    prob = np.zeros(len(labels))
    for r in range(s.repeats):
        fold = stratified_folds(labels, s.folds, s.seed + r)
        for k in range(s.folds):
            te = np.flatnonzero(fold == k)
            tr = np.flatnonzero(fold != k)
            prob[te] += train_and_score(x[tr], y[tr], x[te], s, seed=s.seed * 1000 + r * s.folds + k).numpy()
            if progress is not None:
                progress(f"repeat {r + 1}/{s.repeats}, fold {k + 1}/{s.folds}")
    return prob / s.repeats


def auc_ap(prob: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """ROC AUC and average precision (torchmetrics) of probabilities ``(N,)`` against 0/1 ``labels``."""
    from torchmetrics.functional.classification import binary_auroc, binary_average_precision

    p, t = torch.as_tensor(prob, dtype=torch.float64), torch.as_tensor(labels, dtype=torch.long)
    return float(binary_auroc(p, t)), float(binary_average_precision(p, t))


def bootstrap(probs: dict[str, np.ndarray], labels: np.ndarray, reference: str, n: int = 2000, seed: int = 0) -> dict[str, dict]:
    """AUC and AP of each variant with 95 % percentile bootstrap intervals (cases resampled with replacement, the same
    resamples for every variant), and the paired interval of each variant's difference to ``reference``.

    Returns:
        ``{variant: {"auc", "ap", "auc_ci", "ap_ci", "d_auc", "d_auc_ci", "d_ap", "d_ap_ci"}}``.
    """
    rng = np.random.default_rng(seed)
    idx = [rng.integers(0, len(labels), len(labels)) for _ in range(n)]
    idx = [i for i in idx if 0 < labels[i].sum() < len(i)]  # both classes present
    point = {v: auc_ap(p, labels) for v, p in probs.items()}
    boot = {v: np.array([auc_ap(p[i], labels[i]) for i in idx]) for v, p in probs.items()}
    out = {}
    for v in probs:
        d = boot[v] - boot[reference]
        out[v] = {
            "auc": point[v][0], "ap": point[v][1],
            "auc_ci": tuple(np.percentile(boot[v][:, 0], [2.5, 97.5])), "ap_ci": tuple(np.percentile(boot[v][:, 1], [2.5, 97.5])),
            "d_auc": point[v][0] - point[reference][0], "d_ap": point[v][1] - point[reference][1],
            "d_auc_ci": tuple(np.percentile(d[:, 0], [2.5, 97.5])), "d_ap_ci": tuple(np.percentile(d[:, 1], [2.5, 97.5])),
        }
    return out
