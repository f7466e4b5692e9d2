"""Bone extraction U-Net trained on DRRs (Gozes & Greenspan, ISBI 2019): ``network``, ``predict``, ``options``, ``module``."""
