"""Analytic CT phantoms shared by the simulation and training tests."""

from __future__ import annotations

import numpy as np

from cxrdecomp.io.ct import CTVolume


def cylinder_fraction(n: int, spacing: float, radius_mm: float, center=(0.0, 0.0), ss: int = 4) -> np.ndarray:
    """Fraction of each (X, Y) pixel inside a circle (supersampled ``ss×ss``), shape ``(n, n)``."""
    off = (np.arange(ss) + 0.5) / ss - 0.5
    c = (np.arange(n) - (n - 1) / 2) * spacing
    fx = (c[:, None] + off[None, :] * spacing).reshape(-1)
    X, Y = np.meshgrid(fx, fx, indexing="ij")
    inside = ((X - center[0]) ** 2 + (Y - center[1]) ** 2 <= radius_mm**2).astype(np.float32)
    return inside.reshape(n, ss, n, ss).mean(axis=(1, 3))


def water_cylinder(n: int = 96, spacing: float = 0.5, radius_mm: float = 20.0) -> CTVolume:
    """Water cylinder (0 HU, axis along Z) in air (−1000 HU), anti-aliased; cube of ``n`` voxels."""
    frac = cylinder_fraction(n, spacing, radius_mm)
    hu = np.repeat((-1000.0 + 1000.0 * frac)[:, :, None], n, axis=2).astype(np.float32)
    aff = np.diag([spacing, spacing, spacing, 1.0])
    return CTVolume(hu=hu, spacing=(spacing, spacing, spacing), affine=aff, source="water_cylinder")


def chest_phantom(n: int = 48, spacing: float = 2.0, labels: bool = False) -> CTVolume:
    """Toy chest: water ellipse body, two air lungs, a 500-HU spine rod and 500-HU 'ribs' (slabs); with ``labels``
    a TotalSegmentator-style label map (lungs, a vertebra, ribs)."""
    c = (np.arange(n) - (n - 1) / 2) * spacing
    X, Y, Z = np.meshgrid(c, c, c, indexing="ij")
    r = n * spacing / 2
    hu = np.full((n, n, n), -1000.0, np.float32)
    body = (X / (0.9 * r)) ** 2 + (Y / (0.6 * r)) ** 2 <= 1
    hu[body] = 0.0
    for sx in (-1, 1):
        lung = ((X - sx * 0.4 * r) / (0.3 * r)) ** 2 + (Y / (0.4 * r)) ** 2 + (Z / (0.8 * r)) ** 2 <= 1
        hu[lung] = -850.0
    hu[(X**2 + (Y + 0.4 * r) ** 2 <= (0.12 * r) ** 2)] = 500.0
    ribs = body & (np.abs(np.abs(Y) - 0.5 * r) < 0.06 * r) & (np.sin(Z / (0.12 * r)) > 0.6)
    hu[ribs] = 500.0
    aff = np.diag([spacing, spacing, spacing, 1.0])
    if not labels:
        return CTVolume(hu=hu, spacing=(spacing,) * 3, affine=aff, source="chest_phantom")
    lab = np.zeros(hu.shape, np.int16)
    lab[(hu == -850.0) & (X < 0)], lab[(hu == -850.0) & (X > 0)] = 10, 11
    lab[(X**2 + (Y + 0.4 * r) ** 2 <= (0.12 * r) ** 2)] = 30
    lab[ribs] = 40
    names = {10: "lung_upper_lobe_left", 11: "lung_upper_lobe_right", 30: "vertebrae_T5", 40: "rib_left_5"}
    return CTVolume(hu=hu, spacing=(spacing,) * 3, affine=aff, labels=lab, label_names=names, source="chest_phantom")
