"""Exception hierarchy of lakeguard.

Every error raised on purpose derives from :class:`LakeguardError`, so a caller can catch the whole
family. Errors about a bad value also derive from :class:`ValueError`, following Python's convention.
"""


class LakeguardError(Exception):
    """Base class of every error that lakeguard raises on purpose."""


class ConfigError(LakeguardError, ValueError):
    """A run configuration value is invalid."""


class DataError(LakeguardError, ValueError):
    """A dataset file is missing, corrupt or has an unexpected layout."""


class ModelFileError(LakeguardError, ValueError):
    """A model file cannot be loaded safely, or does not fit the declared architecture."""


class PolicyError(LakeguardError, ValueError):
    """A gate policy is invalid, or a run tried to loosen one of its thresholds."""


class GateError(LakeguardError):
    """A model failed the release gate, or its gate record does not verify."""


class RegistryError(LakeguardError):
    """The model registry rejected a write or contains an inconsistent version."""
