"""omlkit: OML 1.0 fingerprinting for large language models."""

__version__ = "0.1.0"
