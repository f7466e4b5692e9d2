"""Stored simulation (`cxrdecomp simulate`): resumable after a kill, shards, refusal of other settings, bad CTs,
and the training-pair dataset read back from it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _phantoms import chest_phantom

from cxrdecomp.errors import ConfigError, InputError
from cxrdecomp.cli.common import parse_shard
from cxrdecomp.simulate.generate import finished, load_sample, simulate

KW = dict(size=32, seed=1, anatomy_reuse=2, progress=False)


def _arrays(out: Path) -> dict[str, dict[str, np.ndarray]]:
    return {n: load_sample(out / "samples" / f"{n}.npz") for n in finished(out)}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[n].keys() == b[n].keys() and all(np.array_equal(a[n][k], b[n][k]) for k in a[n]) for n in a)


@pytest.fixture(scope="module")
def ct():
    return chest_phantom(24, 4.0)


@pytest.fixture(scope="module")
def reference(ct, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "sim"
    res = simulate([ct], out, n_per_ct=6, previews=False, **KW)
    assert res == {"written": 6, "skipped": 0, "total": 6}
    return out


def test_sample_contents(reference):
    d = load_sample(reference / "samples" / "ct000_s00002.npz")
    for k in ("image", "soft_tissue", "bone", "lung", "lung_mask", "bone_mask", "nodule_mask", "t_bone", "t_tissue", "field"):
        assert d[k].shape == (32, 32), k
    assert np.array_equal(d["image"] - d["soft_tissue"], d["bone"])
    assert 0 <= d["image"].min() and d["image"].max() <= 1 and d["image"].std() > 0.05
    meta = json.loads((reference / "samples" / "ct000_s00002.json").read_text())
    assert meta["sample"] == 2 and meta["geometry"]["view"] in ("PA", "AP") and 60 <= meta["physics"]["kvp"] <= 150
    assert [m["name"] for m in json.loads((reference / "manifest.json").read_text())] == finished(reference)
    assert (reference / "manifest.csv").read_text().startswith("name,")


def test_shards_together_equal_the_unsharded_run(ct, reference, tmp_path):
    out = tmp_path / "sharded"
    counts = [simulate([ct], out, n_per_ct=6, shard=(k, 3), previews=False, **KW)["written"] for k in range(3)]
    assert counts == [2, 2, 2]
    assert _same(_arrays(out), _arrays(reference))
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)


def test_rerun_with_other_settings_is_refused(ct, reference, tmp_path):
    out = tmp_path / "s"
    simulate([ct], out, n_per_ct=2, previews=False, **KW)
    before = (out / "simulation.json").read_text()
    with pytest.raises(ConfigError, match=r"size: 32 → 40"):
        simulate([ct], out, n_per_ct=2, previews=False, **{**KW, "size": 40})
    with pytest.raises(ConfigError, match="target"):
        simulate([ct], out, n_per_ct=2, previews=False, target="air", **KW)
    assert (out / "simulation.json").read_text() == before and len(finished(out)) == 2
    res = simulate([lambda: pytest.fail("CT must not be loaded when all samples exist")], out, n_per_ct=2, previews=False, **KW)
    assert res == {"written": 0, "skipped": 2, "total": 2}
    grown = simulate([ct], out, n_per_ct=3, previews=False, **KW)  # more samples per CT: allowed, the first ones unchanged
    assert grown["written"] == 1 and _same({n: v for n, v in _arrays(out).items() if n < "ct000_s00002"},
                                           {n: v for n, v in _arrays(reference).items() if n < "ct000_s00002"})


def test_bad_ct_writes_nothing(ct, tmp_path):
    hu = ct.hu.copy()
    hu[2, 2, 2] = np.nan
    import dataclasses

    out = tmp_path / "never"
    with pytest.raises(InputError, match="NaN"):
        simulate([dataclasses.replace(ct, hu=hu)], out, n_per_ct=2, **KW)
    assert not out.exists()


def test_killed_simulate_resumes_without_corrupt_samples(ct, tmp_path):
    """SIGKILL a `cxrdecomp simulate` subprocess after its first finished sample; the rerun continues (does not
    redo finished samples) and the result equals an uninterrupted run bit for bit."""
    import nibabel as nib

    n = 40
    p = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(ct.hu, ct.affine), str(p))
    reference = tmp_path / "uninterrupted"
    simulate([ct], reference, n_per_ct=n, previews=False, **KW)
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "cxrdecomp.cli", "simulate", str(p), "-o", str(out), "--n-per-ct", str(n), "--size", "32",
            "--seed", "1", "--anatomy-reuse", "2", "--no-previews"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and len(finished(out)) < 1 and proc.poll() is None:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = finished(out)
    assert 1 <= len(done) < n, "the kill should land mid-run"
    stamps = {k: (out / "samples" / f"{k}.npz").stat().st_mtime_ns for k in done}
    res = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"{n - len(done)} written, {len(done)} already done" in res.stdout
    assert all((out / "samples" / f"{k}.npz").stat().st_mtime_ns == t for k, t in stamps.items())  # continued, not redone
    # the CT was read from NIfTI (float32 HU, same grid): the same samples as the uninterrupted in-memory run
    assert _same(_arrays(out), _arrays(reference))
    assert not list((out / "samples").glob(".*.part"))


def test_training_pairs_read_back(reference):
    from cxrdecomp.data.simulated import SimulatedPairs, split_names

    train, val = split_names(reference, 0.34)
    assert len(val) == 2 and not set(train) & set(val)
    it = SimulatedPairs(reference, size=32, augment=False, names=val)[0]
    d = load_sample(reference / "samples" / f"{val[0]}.npz")
    assert torch.equal(it["x"][0], torch.from_numpy(d["image"])) and torch.allclose(it["x"] - it["bone"], it["soft"])
    torch.manual_seed(0)
    for _ in range(4):  # flips and zooms keep x = soft + bone
        a = SimulatedPairs(reference, size=24, augment=True)[1]
        assert a["x"].shape == (1, 24, 24) and torch.allclose(a["x"], a["soft"] + a["bone"], atol=1e-6)


def test_old_format_folder_is_refused(ct, tmp_path):
    (tmp_path / "samples").mkdir()
    np.save(tmp_path / "samples" / "ct000_s00000.npy", np.zeros((3, 4, 4), np.float32))
    with pytest.raises(ConfigError, match="older format"):
        simulate([ct], tmp_path, n_per_ct=1, **KW)


def test_cli_simulate_one_line_errors(tmp_path):
    from typer.testing import CliRunner

    from cxrdecomp.cli import app

    res = CliRunner().invoke(app, ["simulate", str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "s")])
    assert res.exit_code != 0 and "no such file" in str(res.exception)
    assert not (tmp_path / "s").exists()
