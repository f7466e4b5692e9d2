"""Load each method's :class:`~cxrdecomp.decomposer.Decomposer` once and share it between requests."""

from __future__ import annotations

import threading
from typing import Callable

from cxrdecomp.errors import ConfigError


def bundled_methods() -> dict[str, str]:
    """``--method`` names whose bundled checkpoint is installed → checkpoint name (the registry's
    :attr:`~cxrdecomp.methods.MethodSpec.bundled` names found by :func:`cxrdecomp.checkpoint.available_pretrained`)."""
    from cxrdecomp import methods
    from cxrdecomp.checkpoint import available_pretrained

    have = set(available_pretrained())
    return {s.bundled: s.bundled for s in methods.METHODS.values() if s.bundled in have}


class DecomposerCache:
    """``cache(method)`` → the method's decomposer, built by ``factory(method)`` on first use only.

    Args:
        factory: ``method name → Decomposer`` (e.g. ``Decomposer.from_pretrained(checkpoint)``).
        methods: method name → checkpoint (name or folder, for display); only these are served.

    Raises (on call):
        ConfigError: ``method`` is not one of ``methods``.
        CheckpointError: the factory cannot load it.
    """

    def __init__(self, factory: Callable[[str], object], methods: dict[str, str]):
        self.factory = factory
        self.methods = dict(methods)
        self._loaded: dict[str, object] = {}
        self._lock = threading.Lock()

    def __call__(self, method: str):
        if method not in self.methods:
            raise ConfigError(f"unknown method {method!r}; this server has {sorted(self.methods) or 'no methods'}")
        with self._lock:  # load each model once, even under concurrent first requests
            if method not in self._loaded:
                self._loaded[method] = self.factory(method)
            return self._loaded[method]
