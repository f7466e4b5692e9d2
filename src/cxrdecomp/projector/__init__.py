"""Projectors: parallel- and cone-beam forward projection (DRR) and backprojection (XraySyn Eq. 1–2, 7)."""

from cxrdecomp.projector.geometry import Detector, Pose, random_poses  # noqa: F401
