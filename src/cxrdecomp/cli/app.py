"""The typer application and its command groups; commands register themselves from the verb modules."""

from __future__ import annotations

import typer
from typer.core import TyperGroup

WORKFLOW = ("data", "simulate", "simulate-lung", "drr", "train", "decompose", "views", "demo", "evaluate", "serve", "pacs")
"""Order of the commands in ``cxrdecomp --help``: the order a user needs them."""


class _WorkflowGroup(TyperGroup):
    def list_commands(self, ctx):
        names = list(self.commands)
        return sorted(names, key=lambda n: (WORKFLOW.index(n) if n in WORKFLOW else len(WORKFLOW), names.index(n)))


app = typer.Typer(
    cls=_WorkflowGroup, add_completion=False, no_args_is_help=True,
    help="Decompose chest radiographs into bone, soft-tissue and lung-structure images.",
)
data_app = typer.Typer(no_args_is_help=True, help="Example data from the package registry.")
app.add_typer(data_app, name="data")
train_app = typer.Typer(
    no_args_is_help=True,
    help="Train a method with PyTorch Lightning (resumable: rerun the same command; --accelerator gpu --devices N for DDP); exports OUT/model.",
)
app.add_typer(train_app, name="train")
