"""Training shared by every method: PyTorch Lightning, checkpoints, resume, time budget, logs, DDP, export.

A method supplies a :class:`MethodModule` (a ``LightningModule`` whose ``net`` attribute is the
network the registry builds), data loaders and its options (a :class:`~cxrdecomp.train.TrainOptions`);
:func:`fit` does the rest:

* ``OUT/last.ckpt`` (Lightning state, written at the end of every epoch and every ``checkpoint_minutes`` inside
  one; a link to the newest ``epoch=N-step=M.ckpt`` / ``within-epoch=N-step=M.ckpt``) — rerunning the same
  command resumes from it after a kill (from the newest checkpoint file, with a message, if the link is broken);
* an optional wall-time budget (``max_minutes``, kept across resumes in the Lightning checkpoint) after
  which training stops cleanly and the model is exported; it also drives :meth:`MethodModule.progress`,
  the input of the LR schedules of :mod:`cxrdecomp.train.schedules`;
* ``OUT/logs/`` CSV and TensorBoard logs (``metrics.csv`` keeps the rows of every resumed run; steps redone after
  a kill appear twice, the later row counts); a progress bar;
* ``OUT/model/`` — the exported checkpoint folder (safetensors + config.json + MODEL_CARD.md),
  loadable with ``Decomposer.from_pretrained(OUT/"model")``, written once per run;
* CPU or CUDA, one or many GPUs / nodes (``devices``, ``num_nodes``; DDP strategy).
"""

from __future__ import annotations

import csv
import datetime
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from cxrdecomp import checkpoint
from cxrdecomp.errors import ConfigError
from cxrdecomp.io.atomic import atomic_path
from cxrdecomp.train.options import TrainOptions

LAST = "last.ckpt"
ELAPSED_KEY = "cxrdecomp_elapsed_s"
_OLD_ELAPSED_KEYS = ("bsdiff_elapsed_s",)  # written by bsdiff runs before the one engine; DAE runs: dae_best["elapsed"]


class MethodModule(L.LightningModule):
    """Base class of the methods' LightningModules.

    Subclasses set ``self.net`` (the network ``cxrdecomp.methods.build_model(self.method, **self.model_config)``
    builds), ``method``, ``model_config``, ``input_size`` and ``inference_defaults``, implement
    ``training_step`` / ``validation_step`` (logging ``val/<metric>`` with ``sync_dist=True``) and
    ``configure_optimizers``, and may override :meth:`model_card`, :meth:`export_config` and
    :meth:`select_for_export`. Subclasses that override ``on_train_start``, ``on_train_batch_start``,
    ``on_save_checkpoint`` or ``on_load_checkpoint`` call ``super()``.

    Time budget: with ``max_minutes`` set, training stops at the first batch after that many minutes of
    training (earlier, interrupted runs included: the elapsed time is stored in the checkpoint).
    """

    method: str = ""
    model_config: dict[str, Any] = {}
    input_size: int = 512
    inference_defaults: dict[str, Any] = {}
    card_summary: str = ""
    upstream_checkpoints: tuple[str, ...] = ()
    """Exported checkpoints whose trained weights this module holds frozen (e.g. a first stage); their runs enter the
    card's compute table and total."""
    max_minutes: float | None = None
    _elapsed_before: float = 0.0
    _t0: float | None = None

    # -- time budget and progress -------------------------------------------------------------------
    def elapsed(self) -> float:
        """Training seconds so far, earlier interrupted runs included."""
        return self._elapsed_before + (time.monotonic() - self._t0 if self._t0 is not None else 0.0)

    def progress(self, step: int | None = None) -> float:
        """Training progress in ``[0, 1]``: ``max(step / total_steps, elapsed / budget)``."""
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1
        step = self.global_step if step is None else step
        p = step / total
        if self.max_minutes:
            p = max(p, self.elapsed() / (60 * self.max_minutes))
        return min(1.0, p)

    def on_train_start(self):
        self._t0 = time.monotonic()

    def on_train_batch_start(self, batch, batch_idx):
        if self.max_minutes and self.elapsed() >= 60 * self.max_minutes:
            if not self.trainer.should_stop:
                print(f"{self.method}: time budget of {self.max_minutes} min reached at step {self.global_step}; stopping", file=sys.stderr)
            self.trainer.should_stop = True
            return -1
        return None

    def on_save_checkpoint(self, checkpoint):
        checkpoint[ELAPSED_KEY] = self.elapsed()

    def on_load_checkpoint(self, checkpoint):
        old = [checkpoint.get(k) for k in _OLD_ELAPSED_KEYS] + [(checkpoint.get("dae_best") or {}).get("elapsed")]
        vals = [checkpoint.get(ELAPSED_KEY), *old]
        self._elapsed_before = float(next((v for v in vals if v is not None), 0.0))

    # -- export ---------------------------------------------------------------------------------------
    def select_for_export(self, metrics: dict[str, float]) -> dict[str, float]:
        """Called once before export with the last validation metrics; a module that keeps the weights of
        its best validation epoch loads them into ``self.net`` here and returns their metrics."""
        return metrics

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
        ]
        if training.get("lineage"):
            tot = training["total"]
            lines += ["## Compute, all runs behind these weights", "",
                      "| run | started from | steps | minutes | device |", "|---|---|---|---|---|"]
            prev = "random"
            for r in training["lineage"]:
                m = f"{r['elapsed_s'] / 60:.1f}" if r.get("elapsed_s") is not None else "not recorded"
                cmd = f"`{r['command']}`" if r.get("command") else f"`{r['checkpoint']}` (command not recorded)"
                steps = r["steps"] if r.get("steps") is not None else "not recorded"
                lines.append(f"| {cmd} | {prev} | {steps} | {m} | {r.get('device') or 'not recorded'} |")
                prev = f"`{r['checkpoint']}`"
            lines += [f"| **total** | | **{tot['steps']}** | **{tot['elapsed_s'] / 60:.1f}**"
                      + (f" (+{tot['runs_without_time']} run(s) of unknown time)" if tot["runs_without_time"] else "") + " | |", ""]
        lines += [
            "## Validation metrics",
            "",
        ]
        lines += [f"- {k}: {v:.4g}" for k, v in sorted(metrics.items())] or ["- (none logged)"]
        lines += ["", "## Size", "", f"- Parameters: {n_params:,}; weights file: {size_mb:.2f} MB", ""]
        return "\n".join(lines)


def _appending_csv_logger(folder: Path):
    """Lightning's ``CSVLogger`` deletes ``metrics.csv`` when it starts; this one keeps the rows of earlier (resumed)
    runs and appends to them under the same header."""
    from lightning.pytorch.loggers import CSVLogger

    class AppendingCSVLogger(CSVLogger):
        @property
        def experiment(self):
            if self._experiment is not None:
                return self._experiment
            path = Path(self.log_dir) / "metrics.csv"
            kept = path.read_bytes() if path.is_file() else None
            exp = super().experiment  # creates the writer, which removes the file
            if kept:
                path.write_bytes(kept)
                with open(path, newline="") as f:
                    exp.metrics_keys = list(next(csv.reader(f), []))
            return exp

    return AppendingCSVLogger(folder, name="", version="")


def make_trainer(
    out: Path,
    *,
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    progress: bool = True,
    val_every: int = 1,
    log_every: int = 10,
    checkpoint_minutes: float = 0.0,
    **lightning: Any,
) -> L.Trainer:
    """The Lightning ``Trainer`` of every method: checkpoints every epoch and every ``checkpoint_minutes`` of training
    (``last.ckpt`` links to the epoch-end one, ``within-epoch=N-step=M.ckpt`` the timed one), CSV (appending across resumes) and TensorBoard logs under ``out/logs``, DDP
    when more than one device or node.

    ``lightning`` holds further ``lightning.Trainer`` arguments (``max_epochs``, ``max_steps``, ``accelerator``,
    ``precision``, ``limit_val_batches`` ...).
    """
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    out.mkdir(parents=True, exist_ok=True)
    ckpt = ModelCheckpoint(dirpath=out, save_last="link", save_top_k=1, every_n_epochs=1, save_on_train_epoch_end=True)
    ckpt.CHECKPOINT_NAME_LAST = "last"
    callbacks = [ckpt]
    if checkpoint_minutes and checkpoint_minutes > 0:
        timed = ModelCheckpoint(dirpath=out, filename="within-{epoch}-{step}", save_last=False, save_top_k=1,
                                train_time_interval=datetime.timedelta(minutes=float(checkpoint_minutes)))
        callbacks.append(timed)
    loggers = [_appending_csv_logger(out / "logs"), TensorBoardLogger(out / "logs", name="", version="")]
    if strategy == "auto" and (devices not in (1, "1") or num_nodes > 1):
        strategy = "ddp"
    return L.Trainer(
        default_root_dir=out, devices=devices, num_nodes=num_nodes, strategy=strategy, callbacks=callbacks, logger=loggers,
        enable_progress_bar=progress, check_val_every_n_epoch=val_every, log_every_n_steps=log_every,
        enable_model_summary=False, **lightning,
    )


def resume_checkpoint(out: Path) -> Path | None:
    """The checkpoint a rerun resumes from: the newest of ``OUT/last.ckpt`` (the end of the last epoch) and the
    within-epoch checkpoint written since; if ``last.ckpt`` points to a missing file, the newest ``OUT/*.ckpt`` left,
    with a message on stderr. ``None`` when there is none."""
    last = out / LAST
    others = sorted((p for p in out.glob("*.ckpt") if p.name != LAST and p.is_file()), key=lambda p: p.stat().st_mtime)
    if last.is_file():
        newest = others[-1] if others else last
        return newest if newest.stat().st_mtime > last.stat().st_mtime and newest.resolve() != last.resolve() else last
    if last.is_symlink() or others:
        target = f" → {last.readlink()}" if last.is_symlink() else ""
        if others:
            print(f"{last}{target} is missing; resuming from the newest checkpoint {others[-1].name}", file=sys.stderr)
            return others[-1]
        print(f"{last}{target} is missing and no other checkpoint is left in {out}; starting afresh", file=sys.stderr)
    return None


def init_config(init_from: str | Path, method: str) -> dict[str, Any]:
    """``config.json`` of the model a run starts from (``--init-from``).

    Raises:
        CheckpointError: not a checkpoint folder or bundled name. ConfigError: a checkpoint of another method.
    """
    cfg = checkpoint.load_config(init_from)
    if cfg["method"] != method:
        raise ConfigError(f"--init-from {init_from} is a {cfg['method']} checkpoint, not {method}")
    return cfg


def _lineage(cfg: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The training runs behind a checkpoint config, oldest first: ``{checkpoint, command, steps, elapsed_s}``."""
    t = cfg.get("training", {})
    runs = list(t.get("lineage", []))[:-1] if t.get("lineage") else []
    elapsed = t.get("elapsed_s")
    if elapsed is None and (t.get("options") or {}).get("max_minutes"):
        elapsed = 60.0 * float(t["options"]["max_minutes"])  # older runs recorded only their budget
    return runs + [{"checkpoint": name, "command": t.get("command", ""), "steps": t.get("global_step"), "elapsed_s": elapsed,
                    "device": t.get("device", "")}]


def _init_weights(module: MethodModule, init_from: str) -> list[dict[str, Any]]:
    cfg = init_config(init_from, module.method)
    if cfg.get("model") != module.model_config:
        raise ConfigError(f"--init-from {init_from} has the network {cfg.get('model')}, this run builds {module.model_config}: "
                          "give the same network options")
    dtype = next(module.net.parameters()).dtype
    checkpoint.load_weights(init_from, module.net).train()
    module.net.to(dtype)
    return _lineage(cfg, str(init_from))


def _val_metrics(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val")}


def fit(
    module: MethodModule,
    train_loader,
    val_loader,
    options: TrainOptions,
    *,
    data_description: str = "",
    out: str | Path | None = None,
    epochs: int | None = None,
    **trainer_kwargs,
) -> Path:
    """Train ``module`` and export ``OUT/model``; resume from ``OUT/last.ckpt`` when present.

    Args:
        module: the method's LightningModule (its ``max_minutes`` is set from ``options``).
        train_loader, val_loader: data loaders (``val_loader`` may be ``None``).
        options: the run's options (``out``, ``epochs``, ``max_steps``, ``max_minutes``, devices ...).
        data_description: one line for the model card.
        out, epochs: override ``options.out`` / ``options.epochs`` (e.g. a pre-training stage).
        **trainer_kwargs: further :func:`make_trainer` arguments (``limit_val_batches``, ``log_every`` ...).

    Returns:
        The exported checkpoint folder ``OUT/model``.
    """
    out = Path(out if out is not None else options.out)
    module.max_minutes = options.max_minutes if options.max_minutes and options.max_minutes > 0 else None
    n_batches = len(train_loader) if hasattr(train_loader, "__len__") else 50
    kw = dict(
        max_epochs=int(epochs if epochs is not None else options.epochs), max_steps=int(options.max_steps),
        accelerator=options.accelerator, devices=options.devices_value, num_nodes=int(options.num_nodes),
        strategy=options.strategy, precision=options.precision, progress=bool(options.progress),
        val_every=int(options.val_every), log_every=max(1, min(50, n_batches)),
        checkpoint_minutes=float(getattr(options, "checkpoint_minutes", 0.0) or 0.0),
    )
    kw.update(trainer_kwargs)
    trainer = make_trainer(out, **kw)
    found = resume_checkpoint(out) if options.resume else None
    ckpt_path = str(found) if found is not None else None
    lineage: list[dict[str, Any]] = []
    init_from = getattr(options, "init_from", None)
    if init_from:
        if found is None:
            lineage = _init_weights(module, init_from)
            if trainer.is_global_zero:
                print(f"starting from the weights of {init_from}", file=sys.stderr)
        else:
            lineage = _lineage(init_config(init_from, module.method), str(init_from))
    for up in getattr(module, "upstream_checkpoints", ()):  # frozen parts trained by earlier runs (their compute counts too)
        lineage = _lineage(checkpoint.load_config(up), str(up)) + lineage
    if ckpt_path and trainer.is_global_zero:
        print(f"resuming from {found}", file=sys.stderr)
    trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path)
    metrics = _val_metrics(trainer)
    if not metrics and val_loader is not None:
        # e.g. a resumed run whose step or time budget was already spent: validate the final weights so the
        # exported config and model card still carry metrics
        trainer.validate(module, val_loader, verbose=False)
        metrics = _val_metrics(trainer)
    metrics = module.select_for_export(metrics)
    folder = out / "model"
    if trainer.is_global_zero:
        training = {
            "command": " ".join(shlex.quote(a) for a in ["cxrdecomp", *sys.argv[1:]]) if sys.argv else "",
            "data": data_description,
            "global_step": int(trainer.global_step),
            "epochs": int(trainer.current_epoch),
            "elapsed_s": round(module.elapsed(), 1),
            "device": f"{trainer.accelerator.__class__.__name__} x{trainer.num_devices * trainer.num_nodes}",
            "torch": torch.__version__,
            "options": options.to_json(),
        }
        if lineage:
            runs = lineage + [{"checkpoint": str(folder), "command": training["command"], "steps": training["global_step"],
                               "elapsed_s": training["elapsed_s"], "device": training["device"]}]
            known = [r["elapsed_s"] for r in runs if r.get("elapsed_s") is not None]
            training["lineage"] = runs
            training["total"] = {"steps": sum(int(r["steps"] or 0) for r in runs), "elapsed_s": round(sum(known), 1),
                                 "runs": len(runs), "runs_without_time": len(runs) - len(known)}
        net = module.net
        n_params = sum(p.numel() for p in net.parameters())
        config = module.export_config(metrics, training)
        bytes_per = 2 if config.get("dtype") == "float16" else 4
        card = module.model_card(metrics, training, n_params, n_params * bytes_per / 1e6)
        checkpoint.save(folder, net, config, card)
        with atomic_path(out / "metrics.json") as tmp:
            tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    return folder
