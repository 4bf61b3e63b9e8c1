"""Fingerprints: the file format and the key/response strategies."""

from omlkit.fingerprints.fingerprint_set import FORMAT, Fingerprint, FingerprintSet, Generator, Strategy

__all__ = ["FORMAT", "Fingerprint", "FingerprintSet", "Generator", "Strategy"]
