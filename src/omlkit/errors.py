"""Library exceptions. Each carries a one-line message the CLI prints as-is (exit code 2)."""


class OmlError(Exception):
    """Base of every error omlkit raises on bad input; its message is one line and names what is wrong."""

    exit_code = 2


class ConfigError(OmlError):
    """A configuration value is missing, of the wrong type, or out of range."""


class ModelLoadError(OmlError):
    """A model or tokenizer could not be loaded from the given id or path."""


class CorpusError(OmlError):
    """A text corpus is missing, empty or unreadable."""


class FingerprintFileError(OmlError):
    """A fingerprint file is missing, malformed, or does not fit the model it is used with."""


class RunDirError(OmlError):
    """A run directory belongs to another config, is finished, or cannot be written."""


class EndpointError(OmlError):
    """An HTTP endpoint is unreachable or answers with something other than what was expected."""


class ProtocolError(OmlError):
    """A protocol message is refused: bad signature, replay, unregistered party, spent key, bad commitment."""
