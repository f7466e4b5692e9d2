"""Synthetic DICOM radiographs shared by tests/test_serve.py and tests/test_pacs.py."""

from __future__ import annotations

import io

import numpy as np


def synthetic_cr(shape=(128, 96), seed=0) -> bytes:
    """A small CR DICOM (MONOCHROME2, uint16) as bytes: smooth background + bright 'ribs'."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(seed)
    h, w = shape
    y = np.linspace(0, 1, h)[:, None]
    a = 1000 + 1500 * np.sin(np.pi * y) * np.ones((1, w)) + 800 * (np.sin(20 * y) > 0.7) + rng.normal(0, 20, (h, w))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = "CR", "TEST^PATIENT", "P123"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", ""
    ds.PatientBirthDate, ds.PatientSex, ds.ReferringPhysicianName = "", "", ""
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.5, 0.5]
    ds.PixelData = np.clip(a, 0, 4095).astype(np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


XRAYSYN_TINY = {
    "prior": {"levels": 2, "channels": [4, 8]},
    "refine": None,
    # calibration: the attenuation range this random 3DPN renders (~1.1 ... 4.4), so that its views are not all clipped
    "scene": {"volume_size": 16, "cube_mm": 96.0, "render_size": 32, "view_size": 16, "sdd_mm": 1000.0, "sod_mm": 800.0,
              "calibration": [1.0, 4.5]},
}


XRAYSYN_TINY_REFINE = {"features": 4, "growth": 4, "n_blocks": 1, "n_layers": 1, "generator_channels": [4]}


def tiny_xraysyn(folder, seed=0, refine=False):
    """Save a tiny random XraySyn checkpoint (16³ volume, 16² views; with ``refine`` a 2DRN to 32², whose zero-initialised
    residual is made non-zero) to ``folder``; returns the folder."""
    import torch

    from cxrdecomp import checkpoint
    from cxrdecomp.methods.xraysyn.network import XraySyn

    torch.manual_seed(seed)
    model = {**XRAYSYN_TINY, "refine": XRAYSYN_TINY_REFINE if refine else None}
    net = XraySyn(**model)
    if refine:
        torch.nn.init.normal_(net.refine.rdn.tail.weight, std=0.05)
    cfg = {"method": "xraysyn", "model": model, "input_size": 32 if refine else 16,
           "inference": {"w": 1.0, "w_s": 1.0, "channels_last": False}}
    return checkpoint.save(folder, net, cfg, "tiny random XraySyn test model")


def ramp_png(shape=(72, 80)) -> bytes:
    """An 8-bit greyscale PNG: a vertical profile with bright horizontal 'ribs'."""
    from PIL import Image

    h, w = shape
    y = np.linspace(0, 1, h)[:, None]
    a = (0.3 + 0.5 * np.sin(np.pi * y) + 0.2 * (np.sin(20 * y) > 0.7)) * np.ones((1, w))
    buf = io.BytesIO()
    Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
