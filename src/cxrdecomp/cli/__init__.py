"""The ``cxrdecomp`` command line (typer), one module per verb.

Every :class:`cxrdecomp.errors.CxrdecompError`, and every file-system error on a named path (an unwritable or
impossible ``-o``, a full disk), becomes one line on stderr and exit code 2.
Heavy modules are imported inside the commands so that ``cxrdecomp --help`` stays fast.
"""

from __future__ import annotations

import sys

import typer

from cxrdecomp.cli import data, decompose, drr, evaluate, serve, simulate, train, views  # noqa: F401  (register the commands)
from cxrdecomp.cli.app import app
from cxrdecomp.errors import CxrdecompError

__all__ = ["app", "main"]


def main() -> None:
    try:
        app(standalone_mode=False)
    except CxrdecompError as e:
        print(f"cxrdecomp: error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        if not e.filename:
            raise
        print(f"cxrdecomp: error: cannot use {e.filename}: {e.strerror or e}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("cxrdecomp: aborted", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
