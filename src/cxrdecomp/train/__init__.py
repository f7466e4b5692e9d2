"""The one training engine: PyTorch Lightning trainer, fit, export, resume, time budget, EMA, schedules.

A method supplies a :class:`MethodModule` subclass and data loaders; :func:`fit` does the rest (see
:mod:`cxrdecomp.train.engine`). Options shared by every method are :class:`TrainOptions`
(:mod:`cxrdecomp.train.options`, standard library only). The engine is imported on first use, so that
reading a method's options does not import Lightning.
"""

from cxrdecomp.train.options import TrainOptions, option

__all__ = ["LAST", "MethodModule", "TrainOptions", "fit", "make_trainer", "option"]


def __getattr__(name: str):
    if name in ("LAST", "MethodModule", "fit", "make_trainer"):
        from cxrdecomp.train import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
