"""The CAD check of the lung-structure paper at small N: labels from JSRT names, stratified folds, a classifier that
learns a visible 'nodule', bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrdecomp.errors import InputError
from cxrdecomp.evaluate.cad import CADSettings, bootstrap, cross_validate, jsrt_nodule_labels, stratified_folds


def test_jsrt_labels_and_stratified_folds():
    assert jsrt_nodule_labels(["JPCLN001", "JPCNN002"]).tolist() == [1, 0]
    with pytest.raises(InputError, match="not a JSRT case name"):
        jsrt_nodule_labels(["case7"])
    y = np.array([1] * 10 + [0] * 25)
    f = stratified_folds(y, 5, seed=0)
    for k in range(5):
        assert (y[f == k] == 1).sum() == 2 and (y[f == k] == 0).sum() == 5


def _blobs(n, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 0.5 + 0.05 * torch.randn(n, 1, size, size, generator=g)
    y = np.array([i % 2 for i in range(n)])
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for i in np.flatnonzero(y):
        r, c = torch.randint(8, size - 8, (2,), generator=g).tolist()
        x[i, 0] += 0.4 * (((yy - r) ** 2 + (xx - c) ** 2) < 9).float()
    return x, y


def test_classifier_finds_a_visible_nodule_and_not_a_hidden_one():
    torch.set_num_threads(1)
    s = CADSettings(size=32, channels=(8, 16, 32), epochs=25, folds=4, repeats=1)
    x, y = _blobs(48)
    seen = cross_validate(x, y, s)
    hidden = cross_validate(x[torch.randperm(48, generator=torch.Generator().manual_seed(1))], y, s)  # labels shuffled
    r = bootstrap({"original": hidden, "visible": seen}, y, reference="original", n=300)
    assert r["visible"]["auc"] > 0.85 and r["original"]["auc"] < 0.8
    lo, hi = r["visible"]["auc_ci"]
    assert lo <= r["visible"]["auc"] <= hi and r["original"]["d_auc"] == 0.0 and r["visible"]["d_auc_ci"][0] > 0
    with pytest.raises(InputError, match="at least 4 images of each class"):
        cross_validate(x[:6], y[:6], s)
