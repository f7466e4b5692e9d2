"""X-ray tube spectra from SpekPy (Poludniowski et al., Med. Phys. 48:3630, 2021), cached on disk.

A spectrum is ``(energies_keV (E,), weights (E,))`` with weights summing to 1. ``kind="fluence"`` gives
photon-number weights (photon-counting detector, Poisson statistics); ``"energy"`` weights each bin by
``E`` (energy-integrating flat-panel detector), the default for radiograph simulation.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from cxrdecomp.errors import InputError


def _cache_dir() -> Path:
    from platformdirs import user_cache_dir

    d = Path(os.environ.get("CXRDECOMP_CACHE", user_cache_dir("cxrdecomp"))) / "spectra"
    d.mkdir(parents=True, exist_ok=True)
    return d


@lru_cache(maxsize=64)
def _raw(kvp: float, al_mm: float, anode_angle: float) -> tuple[np.ndarray, np.ndarray]:
    path = _cache_dir() / f"spek_{kvp:g}kVp_{al_mm:g}mmAl_{anode_angle:g}deg.npz"
    if path.exists():
        z = np.load(path)
        return z["k"], z["phi"]
    import spekpy
    s = spekpy.Spek(kvp=float(kvp), th=float(anode_angle))
    if al_mm > 0:
        s.filter("Al", float(al_mm))
    k, phi = s.get_spectrum()
    from cxrdecomp.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, k=k, phi=phi)
    return np.asarray(k), np.asarray(phi)


def spectrum(
    kvp: float = 120.0,
    filtration_mm_al: float = 2.5,
    bin_kev: float = 2.0,
    kind: str = "energy",
    anode_angle: float = 12.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Tube spectrum (SpekPy) rebinned to ``bin_kev`` keV.

    Args:
        kvp: tube voltage (kVp), 30–150.
        filtration_mm_al: total aluminium filtration in mm.
        bin_kev: energy bin width in keV (fewer bins = faster polyenergetic rendering).
        kind: ``"energy"`` (energy-integrating detector, weights ∝ E·Φ(E)) or ``"fluence"`` (Φ(E)).
        anode_angle: tungsten anode angle in degrees.

    Returns:
        ``(energies_keV, weights)``: bin-centre energies (E,) and weights summing to 1.

    Raises:
        InputError: kVp out of range or unknown ``kind``.
    """
    if not 30 <= kvp <= 150:
        raise InputError(f"kVp must be in 30–150, got {kvp}")
    if kind not in ("energy", "fluence"):
        raise InputError(f"kind must be 'energy' or 'fluence', got {kind!r}")
    k, phi = _raw(float(kvp), float(filtration_mm_al), float(anode_angle))
    edges = np.arange(np.floor(k.min()), k.max() + bin_kev, bin_kev)
    idx = np.clip(np.digitize(k, edges) - 1, 0, len(edges) - 2)
    w = np.bincount(idx, weights=phi * (k if kind == "energy" else 1.0), minlength=len(edges) - 1)
    n = np.bincount(idx, weights=phi, minlength=len(edges) - 1)
    e = np.bincount(idx, weights=phi * k, minlength=len(edges) - 1) / np.maximum(n, 1e-30)
    keep = (w > 1e-6 * w.max()) & (e >= 1.0)
    e, w = e[keep], w[keep]
    return e, w / w.sum()


def monoenergetic(energy_kev: float) -> tuple[np.ndarray, np.ndarray]:
    """A one-line spectrum at ``energy_kev`` (for tests and monoenergetic DRRs)."""
    return np.array([float(energy_kev)]), np.array([1.0])


def mean_energy(spec: tuple[np.ndarray, np.ndarray]) -> float:
    e, w = spec
    return float((e * w).sum())
