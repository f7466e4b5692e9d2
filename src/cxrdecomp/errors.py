"""One exception family for everything cxrdecomp reports to a user.

The CLI turns any :class:`CxrdecompError` into one line on stderr and exit code 2.
Messages say what is wrong *and* what to do about it.
"""


class CxrdecompError(Exception):
    """Base class of every error cxrdecomp raises on purpose."""


class InputError(CxrdecompError):
    """An input file or array is unusable (corrupt, wrong modality, wrong shape, NaN, ...)."""


class DataNotFoundError(CxrdecompError):
    """Example data, a dataset folder or a weights file is missing."""


class CheckpointError(CxrdecompError):
    """A checkpoint folder is missing files or does not describe a known model."""


class ConfigError(CxrdecompError):
    """An option or combination of options is invalid."""
