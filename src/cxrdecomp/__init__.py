"""cxrdecomp: decompose chest radiographs into bone, soft-tissue and lung-structure images.

Networks are trained on data simulated from CT (digitally reconstructed radiographs, DRRs) or on
real radiograph / soft-tissue pairs. Research use only, not for diagnosis.

Two-line use::

    from cxrdecomp import Decomposer
    result = Decomposer.from_pretrained()(image)   # the default model; or from_pretrained("dae"), a folder ...
    result.bone, result.soft_tissue, result.enhanced
"""

from cxrdecomp.errors import CxrdecompError

__version__ = "0.1.0"
__all__ = ["CxrdecompError", "Decomposer", "Decomposition", "__version__"]


def __getattr__(name: str):  # lazy: importing the package must not import torch
    if name in ("Decomposer", "Decomposition"):
        from cxrdecomp import decomposer

        return getattr(decomposer, name)
    raise AttributeError(name)
