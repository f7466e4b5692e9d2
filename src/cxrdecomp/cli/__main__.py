"""``python -m cxrdecomp.cli`` = the ``cxrdecomp`` command."""

from cxrdecomp.cli import main

main()
