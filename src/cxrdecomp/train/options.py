"""Training options shared by every method, as one dataclass that each method's ``options.py`` extends.

``cxrdecomp train METHOD`` builds its command-line options from the method's dataclass fields
(:func:`cxrdecomp.cli.train`): the field name is the flag (``batch_size`` → ``--batch-size``), the
annotation its type (``bool`` → ``--x/--no-x``; ``int``, ``float``, ``str``, ``Path`` or ``Optional`` of
one of them), the default its default and ``metadata["help"]`` its help. Declare an option once, here or in
the method's subclass, and nothing else.

This module imports only the standard library, so that ``cxrdecomp --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


def option(default: Any, help: str = "", *, flag: str | None = None) -> Any:  # noqa: A002 - the CLI's word
    """A dataclass field with a command-line help text and an optional short flag (e.g. ``"-o"``)."""
    meta = {"help": help}
    if flag:
        meta["flag"] = flag
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainOptions:
    """Options every method's training takes (its ``Options`` subclass adds its own and may change defaults).

    Each run folder ``out`` holds ``last.ckpt`` (resume: rerun the same command), ``logs/`` (CSV and
    TensorBoard), ``metrics.json`` and ``model/`` (the exported checkpoint).
    """

    data: Optional[Path] = option(None, "Training data folder (what the method reads: see `cxrdecomp train METHOD --help`).")
    out: Path = option(Path("runs/model"), "Run folder: last.ckpt (resume), logs/, metrics.json, model/ (exported checkpoint).", flag="-o")
    epochs: int = option(10, "Training epochs.")
    max_steps: int = option(-1, "Stop after this many optimiser steps (-1: no limit).")
    max_minutes: Optional[float] = option(None, "Wall-time budget of the run in minutes, resumes included; the LR schedule ends with it.")
    batch_size: int = option(8, "Images per optimiser step (per device).")
    lr: float = option(1e-3, "Learning rate.")
    size: int = option(512, "Model input size (square pixels).")
    seed: int = option(0, "Random seed.")
    accelerator: str = option("auto", "cpu, gpu or auto.")
    devices: str = option("1", "Devices per node (a number or 'auto'); more than one trains with DDP.")
    num_nodes: int = option(1, "Nodes (multi-node DDP).")
    strategy: str = option("auto", "Lightning strategy (auto: DDP when devices > 1).")
    precision: Optional[str] = option(None, "Lightning precision, e.g. 32-true, bf16-mixed, 16-mixed.")
    num_workers: int = option(0, "Data-loader worker processes.")
    val_every: int = option(1, "Validate every N epochs.")
    progress: bool = option(True, "Show a progress bar.")
    resume: bool = option(True, "Resume from OUT/last.ckpt when present.")
    init_from: Optional[str] = option(None, "Start from the weights of an exported model (folder or bundled name) of the same method and network; the model card adds its compute to this run's.")
    checkpoint_minutes: float = option(10.0, "Also checkpoint every N minutes of training inside an epoch (0: at epoch ends only).")

    def replace(self, **changes: Any) -> "TrainOptions":
        """A copy with some options changed."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The options as JSON-ready values (paths as strings), for ``config.json["training"]``."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}

    @property
    def devices_value(self) -> int | str:
        """``devices`` as Lightning wants it: an int, or a string such as ``"auto"``."""
        d = str(self.devices)
        return int(d) if d.isdigit() else d


@dataclass
class OnlineOptions(TrainOptions):
    """Options of the methods that can train on online realistic simulation (:mod:`cxrdecomp.data.online`)."""

    online: bool = option(False, "Render realistic samples on the fly (anatomy, cone beam, polyenergetic physics, detector, processing) instead of --data.")
    ct: Optional[Path] = option(None, "CT for --online (NIfTI, NRRD/MHA or a DICOM series folder); default: the example CT with its labels.")
    labels: Optional[Path] = option(None, "Label map of --ct (same grid), for the bone groups and lungs.")
    label_names: Optional[Path] = option(None, "structures.csv (columns structure,id) of --labels.")
    epoch_samples: int = option(2000, "--online: fresh samples per epoch.")
    val_samples: int = option(64, "--online: validation samples (the held-out anatomy bank).")
