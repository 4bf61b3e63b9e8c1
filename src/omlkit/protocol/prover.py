"""The prover: act as an ordinary user of a host, send it unspent fingerprint keys, and submit proofs.

The keys go to the host's public OpenAI-compatible endpoint through a verification backend (the
``http`` backend by default; any :class:`~omlkit.verification.backends.base.Backend` can be passed in).
The answers, with each fingerprint opened by its salt from the reveal file, go to the platform, whose
verifier decides and signs. Nothing here prints a key or a response.
"""

from __future__ import annotations

import random
from typing import Any

from omlkit.errors import ProtocolError
from omlkit.fingerprints import Fingerprint, FingerprintSet
from omlkit.protocol.client import PlatformClient
from omlkit.protocol.config import ProveConfig
from omlkit.protocol.identity import normalize_address
from omlkit.protocol.messages import Proof, ProofSubmission, RevealFile, VerificationReport


def http_backend(endpoint: str, timeout: float = 120.0) -> Any:
    """The registered ``http`` verification backend for ``endpoint``."""
    from omlkit.verification.backends import BACKENDS

    return BACKENDS.get("http")(endpoint, timeout=timeout)


def choose_keys(
    fp_set: FingerprintSet, reveal: RevealFile, spent: set[int], count: int | None, seed: int = 0
) -> list[Fingerprint]:
    """Unspent fingerprints the reveal file can open; ``count`` of them drawn with ``seed`` (all if None).

    Refuses (ProtocolError) when the reveal file belongs to another fingerprint file or none is left.
    """
    if reveal.fingerprints_sha256 != fp_set.content_hash():
        raise ProtocolError(
            "reveal file: it was written for another fingerprint file (fingerprints_sha256 differs)"
        )
    left = [fp for fp in fp_set.fingerprints if fp.id not in spent and fp.id in reveal.salts]
    if not left:
        raise ProtocolError(f"model {reveal.model_id!r}: every fingerprint key is already spent")
    if count is not None and count < len(left):
        left = sorted(random.Random(seed).sample(left, count), key=lambda fp: fp.id)
    return left


def collect_proofs(
    backend: Any,
    fingerprints: list[Fingerprint],
    reveal: RevealFile,
    *,
    max_new_tokens: int,
    chat: bool = False,
) -> list[Proof]:
    """Ask the host each key (raw completion, or a one-message chat) and pair each answer with its reveal."""
    prompts = [[{"role": "user", "content": fp.key}] if chat else fp.key for fp in fingerprints]
    answers = backend.generate(prompts, max_new_tokens)
    return [
        Proof(fingerprint_id=fp.id, answer=answer, key=fp.key, response=fp.response, salt=reveal.salts[fp.id])
        for fp, answer in zip(fingerprints, answers, strict=True)
    ]


def prove(
    config: ProveConfig, *, backend: Any = None, client: PlatformClient | None = None
) -> VerificationReport:
    """Run one proof round against ``config.endpoint``; returns the platform-signed report (checked).

    Refuses (ProtocolError) a mismatched reveal file, a model with no unspent key, or a report whose
    signature is not the platform's.
    """
    host = normalize_address(config.host_address, "--host-address")
    fp_set = FingerprintSet.load(config.fingerprints)
    reveal = RevealFile.load(config.reveal_file)
    own_client = client is None
    client = client or PlatformClient(config.platform)
    try:
        platform_address = client.address()
        chosen = choose_keys(fp_set, reveal, client.spent(reveal.model_id), config.count, config.seed)
        own_backend = backend is None
        backend = backend or http_backend(config.endpoint)
        try:
            proofs = collect_proofs(
                backend, chosen, reveal, max_new_tokens=config.max_new_tokens, chat=config.chat
            )
        finally:
            if own_backend:
                backend.close()
        data = client.submit_proofs(ProofSubmission(host=host, model_id=reveal.model_id, proofs=proofs))
    finally:
        if own_client:
            client.close()
    report = VerificationReport.model_validate(data)
    report.check_signed_by(platform_address, "verification report")
    return report
