"""Novel views in the web viewer: XraySyn's 3D prior of a result, kept in memory, rendered at any angle.

A result decomposed with an XraySyn model (Peng et al., AAAI 2021) stores the model-size input ``x`` that the
network saw (``view_input.npy``). The first view asked for runs, with the pieces of
:func:`cxrdecomp.methods.xraysyn.predict.views`, the calibration ``L = a·x + b``
(:func:`~cxrdecomp.methods.xraysyn.scene.calibrate`) and the 3DPN at the frontal pose; :class:`ViewCache` keeps that
prediction, so that each further angle only re-renders it (CT2Xray, then the 2DRN when the model has one:
``predict.thickness``) and maps the rendering back to the display domain, ``((L_view − b) / a)`` clipped to ``[0, 1]``.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Callable

import numpy as np

from cxrdecomp.errors import CheckpointError, InputError

VIEW_METHODS = ("xraysyn",)
"""Registry names of the methods with novel views (a 3D prior to render)."""
MAX_ANGLE = 18.0
"""Largest |azimuth| and |elevation| served, in degrees: XraySyn's training poses (paper §3.1: ±18°)."""
VIEW_INPUT = "view_input.npy"
"""File of a result folder holding the model-size input ``(h, h)`` float32 of a method with views."""


def has_views(method: str | None) -> bool:
    """Whether a ``config.json["method"]`` name (or alias) is one of :data:`VIEW_METHODS`."""
    from cxrdecomp import methods

    try:
        return method is not None and methods.get(method).name in VIEW_METHODS
    except CheckpointError:
        return False


def checkpoint_has_views(name_or_path: str) -> bool:
    """Whether a checkpoint (bundled name or folder) is of a method with views; reads only its ``config.json``
    (``False`` when it cannot be read)."""
    from cxrdecomp import checkpoint

    try:
        return has_views(checkpoint.load_config(name_or_path)["method"])
    except (CheckpointError, OSError, TypeError):
        return False


def check_angle(name: str, value: float) -> float:
    """``value`` (degrees) if finite and within ±:data:`MAX_ANGLE`.

    Raises:
        InputError: otherwise (the message names ``name`` and the range).
    """
    if not math.isfinite(value) or abs(value) > MAX_ANGLE:
        raise InputError(f"{name} {value:g}° is outside the ±{MAX_ANGLE:g}° of the model's training poses")
    return float(value)


class ViewCache:
    """Result id → its model-size input, calibration ``(a, b)`` and the 3DPN prediction; at most ``max_count`` kept (least
    recently used dropped first). The web viewer also drops a result's entry when its result store removes the result
    (:meth:`drop`).

    Args:
        max_count: predictions kept at most (one is five ``volume_size³`` float volumes: 5 MB at 64³, 42 MB at 128³).
    """

    def __init__(self, max_count: int = 4):
        self.max_count = max(1, int(max_count))
        self._preds: OrderedDict[str, tuple] = OrderedDict()  # rid → (x, a, b, 3DPN prediction)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._preds)

    def __contains__(self, rid: str) -> bool:
        return rid in self._preds

    def drop(self, rid: str) -> None:
        """Forget the prediction of ``rid`` (no error if none)."""
        with self._lock:
            self._preds.pop(rid, None)

    def _prediction(self, rid: str, model, load_input: Callable[[], np.ndarray]):
        import torch

        from cxrdecomp.methods.xraysyn.predict import calibrated_prior  # the method's own calibration + 3DPN step of views()

        with self._lock:
            if rid in self._preds:
                self._preds.move_to_end(rid)
                return self._preds[rid]
        device = next(model.parameters()).device
        x = torch.from_numpy(np.asarray(load_input(), dtype=np.float32))[None, None].to(device)
        a, b, pred = calibrated_prior(model, x)
        entry = (x, a, b, pred)
        with self._lock:
            self._preds[rid] = entry
            self._preds.move_to_end(rid)
            while len(self._preds) > self.max_count:
                self._preds.popitem(last=False)
        return entry

    def render(self, rid: str, model, load_input: Callable[[], np.ndarray], azimuth: float, elevation: float = 0.0) -> np.ndarray:
        """The view of result ``rid`` at ``(azimuth, elevation)`` degrees: ``(h, h)`` float32 at the model's input size,
        display domain ``[0, 1]``.

        Args:
            model: the result's :class:`~cxrdecomp.methods.xraysyn.network.XraySyn` model (eval mode).
            load_input: returns the model-size input ``(h, h)``; called only when the prediction is not cached.
        """
        import torch

        from cxrdecomp.methods.xraysyn.predict import thickness
        from cxrdecomp.methods.xraysyn.scene import uncalibrate

        with torch.inference_mode():
            x, a, b, pred = self._prediction(rid, model, load_input)
            t = thickness(model, x, pred, a.new_tensor([[float(azimuth), float(elevation)]]))
            log = model.scene.radiograph(t)
            return uncalibrate(log[0, 0], a[0, 0], b[0, 0]).clamp(0, 1).float().cpu().numpy()
