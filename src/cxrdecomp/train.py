"""Training shared by every method: PyTorch Lightning, checkpoints, resume, logs, DDP.

A method supplies a :class:`MethodModule` (a ``LightningModule`` whose ``net`` attribute is the
network the registry builds) and data loaders; :func:`fit` does the rest:

* ``OUT/last.ckpt`` (Lightning state, written at the end of every epoch; a link to the newest
  ``epoch=N-step=M.ckpt``) — rerunning the same command resumes from it after a kill;
* an optional wall-time budget (``max_minutes``; Lightning's ``max_time``, kept across resumes) after
  which training stops cleanly and the model is exported;
* ``OUT/logs/`` CSV and TensorBoard logs; a progress bar;
* ``OUT/model/`` — the exported checkpoint folder (safetensors + config.json + MODEL_CARD.md),
  loadable with ``Decomposer.from_pretrained(OUT/"model")``;
* CPU or CUDA, one or many GPUs / nodes (``devices``, ``num_nodes``; DDP strategy).
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch

from cxrdecomp import checkpoint

LAST = "last.ckpt"


class MethodModule(L.LightningModule):
    """Base class of the methods' LightningModules.

    Subclasses set ``self.net`` (built by ``registry.build_model(self.method, **self.model_config)``),
    ``method``, ``model_config``, ``input_size`` and ``inference_defaults``, implement
    ``training_step`` / ``validation_step`` (logging ``val/<metric>`` with ``sync_dist=True``) and
    ``configure_optimizers``, and may override :meth:`model_card`.
    """

    method: str = ""
    model_config: dict[str, Any] = {}
    input_size: int = 512
    inference_defaults: dict[str, Any] = {}
    card_summary: str = ""

    def export_config(self, metrics: dict[str, float], training: dict[str, Any]) -> dict[str, Any]:
        return {
            "method": self.method,
            "model": self.model_config,
            "input_size": self.input_size,
            "inference": self.inference_defaults,
            "training": training,
            "metrics": metrics,
        }

    def model_card(self, metrics: dict[str, float], training: dict[str, Any], n_params: int, size_mb: float) -> str:
        lines = [
            f"# Model card: {self.method}",
            "",
            self.card_summary or f"cxrdecomp method `{self.method}`.",
            "",
            "**Intended use:** research on chest radiograph decomposition. Not a medical device; not for diagnosis.",
            "",
            "## Training",
            "",
            f"- Command: `{training.get('command', '')}`",
            f"- Data: {training.get('data', '')}",
            f"- Steps: {training.get('global_step', '')}, epochs: {training.get('epochs', '')}, device: {training.get('device', '')}",
            "",
            "## Validation metrics",
            "",
        ]
        lines += [f"- {k}: {v:.4g}" for k, v in sorted(metrics.items())] or ["- (none logged)"]
        lines += ["", "## Size", "", f"- Parameters: {n_params:,}; weights file: {size_mb:.2f} MB", ""]
        return "\n".join(lines)


def make_trainer(
    out: Path,
    *,
    max_epochs: int = 10,
    max_steps: int = -1,
    accelerator: str = "auto",
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    precision: str | None = None,
    progress: bool = True,
    val_every: int = 1,
    limit_val_batches: float | int = 1.0,
    log_every: int = 10,
    max_minutes: float | None = None,
) -> L.Trainer:
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    out.mkdir(parents=True, exist_ok=True)
    ckpt = ModelCheckpoint(dirpath=out, save_last="link", save_top_k=1, every_n_epochs=1, save_on_train_epoch_end=True)
    ckpt.CHECKPOINT_NAME_LAST = "last"
    loggers = [CSVLogger(out / "logs", name="", version=""), TensorBoardLogger(out / "logs", name="", version="")]
    if strategy == "auto" and (devices not in (1, "1") or num_nodes > 1):
        strategy = "ddp"
    from datetime import timedelta

    return L.Trainer(
        default_root_dir=out,
        max_time=timedelta(minutes=max_minutes) if max_minutes else None,
        max_epochs=max_epochs,
        max_steps=max_steps,
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision=precision,
        callbacks=[ckpt],
        logger=loggers,
        enable_progress_bar=progress,
        check_val_every_n_epoch=val_every,
        limit_val_batches=limit_val_batches,
        log_every_n_steps=log_every,
        enable_model_summary=False,
    )


def fit(
    module: MethodModule,
    train_loader,
    val_loader,
    out: str | Path,
    *,
    data_description: str = "",
    resume: bool = True,
    **trainer_kwargs,
) -> Path:
    """Train ``module`` and export ``OUT/model``; resume from ``OUT/last.ckpt`` when present.

    Returns:
        The exported checkpoint folder ``OUT/model``.
    """
    out = Path(out)
    trainer = make_trainer(out, **trainer_kwargs)
    last = out / LAST
    ckpt_path = str(last) if (resume and last.is_file()) else None
    if ckpt_path and trainer.is_global_zero:
        print(f"resuming from {last}", file=sys.stderr)
    trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val")}
    if not metrics and val_loader is not None:
        # e.g. a resumed run whose step or time budget was already spent: validate the final weights so the
        # exported config and model card still carry metrics
        trainer.validate(module, val_loader, verbose=False)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val")}
    folder = out / "model"
    if trainer.is_global_zero:
        training = {
            "command": " ".join(shlex.quote(a) for a in ["cxrdecomp", *sys.argv[1:]]) if sys.argv else "",
            "data": data_description,
            "global_step": int(trainer.global_step),
            "epochs": int(trainer.current_epoch),
            "device": f"{trainer.accelerator.__class__.__name__} x{trainer.num_devices * trainer.num_nodes}",
            "torch": torch.__version__,
        }
        net = module.net
        n_params = sum(p.numel() for p in net.parameters())
        config = module.export_config(metrics, training)
        bytes_per = 2 if config.get("dtype") == "float16" else 4
        card = module.model_card(metrics, training, n_params, n_params * bytes_per / 1e6)
        checkpoint.save(folder, net, config, card)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return folder
