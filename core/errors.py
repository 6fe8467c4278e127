"""User-facing errors.

Every failure caused by what a user handed in (a file, a config, a checkpoint, an
argument) raises :class:`MinbertError` or a subclass, with a message that says what was
wrong and how to fix it. Bugs in our own code keep raising ordinary Python exceptions.
"""


class MinbertError(Exception):
    """Base class of every user-caused failure."""


class ConfigError(MinbertError):
    """A recipe / config value is unknown, of the wrong type or out of range."""


class DataError(MinbertError):
    """A data file is missing, unreadable, or has no usable rows."""


class CheckpointError(MinbertError):
    """A checkpoint directory is missing files, or a file in it is corrupt."""


class ModelLoadError(MinbertError):
    """Pretrained weights could not be found or loaded."""


class JobError(MinbertError):
    """A training job could not be submitted, found or controlled."""
