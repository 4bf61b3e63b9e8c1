"""The prover: pick unspent fingerprint keys and reveal them to the platform, naming the host to check.

Each fingerprint is opened by its salt from the reveal file. The prover brings no answers: the
platform's verifier sends the keys to the host's registered endpoint itself and decides on what it
observed (docs/protocol.md), so a prover can neither frame a compliant host nor replay another host's
answers. Nothing here prints a key or a response.
"""

from __future__ import annotations

import random

from omlkit.errors import ProtocolError
from omlkit.fingerprints import Fingerprint, FingerprintSet
from omlkit.protocol.client import PlatformClient
from omlkit.protocol.config import ProveConfig
from omlkit.protocol.identity import normalize_address
from omlkit.protocol.messages import MAX_PROOFS, Proof, ProofSubmission, RevealFile, VerificationReport


def choose_keys(
    fp_set: FingerprintSet, reveal: RevealFile, spent: set[int], count: int | None, seed: int = 0
) -> list[Fingerprint]:
    """Unspent fingerprints the reveal file can open; ``count`` of them drawn with ``seed`` (all if None).

    Refuses (ProtocolError) when the reveal file belongs to another fingerprint file or none is left.
    """
    _check_reveal(fp_set, reveal)
    left = [fp for fp in fp_set.fingerprints if fp.id not in spent and fp.id in reveal.salts]
    if not left:
        raise ProtocolError(f"model {reveal.model_id!r}: every fingerprint key is already spent")
    if count is not None and count < len(left):
        left = sorted(random.Random(seed).sample(left, count), key=lambda fp: fp.id)
    return left


def block_keys(fp_set: FingerprintSet, reveal: RevealFile, block: list[int]) -> list[Fingerprint]:
    """The fingerprints of the trace ``block`` the platform reserved: the keys a traced proof reveals.
    Refuses a reveal file for another fingerprint file and one that cannot open the block."""
    _check_reveal(fp_set, reveal)
    by_id = {fp.id: fp for fp in fp_set.fingerprints}
    missing = [i for i in block if i not in by_id or i not in reveal.salts]
    if missing:
        raise ProtocolError(f"fingerprint {missing[0]} of the trace block is not in the fingerprint or "
                            "reveal file")
    return [by_id[i] for i in block]


def _check_reveal(fp_set: FingerprintSet, reveal: RevealFile) -> None:
    if reveal.fingerprints_sha256 != fp_set.content_hash():
        raise ProtocolError(
            "reveal file: it was written for another fingerprint file (fingerprints_sha256 differs)"
        )


def open_proofs(fingerprints: list[Fingerprint], reveal: RevealFile) -> list[Proof]:
    """Each fingerprint opened by its salt: what the verifier checks against the commitment."""
    return [
        Proof(fingerprint_id=fp.id, key=fp.key, response=fp.response, salt=reveal.salts[fp.id])
        for fp in fingerprints
    ]


def prove(config: ProveConfig, *, client: PlatformClient | None = None) -> VerificationReport:
    """Run one proof round against the host ``config.host_address``; returns the platform-signed report
    (checked). The platform asks the host's registered endpoint the keys.

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
        chosen = (block_keys(fp_set, reveal, client.trace_block(reveal.model_id, config.count or MAX_PROOFS))
                  if config.trace else
                  choose_keys(fp_set, reveal, client.spent(reveal.model_id), config.count, config.seed))
        submission = ProofSubmission(
            host=host, model_id=reveal.model_id, proofs=open_proofs(chosen, reveal), chat=config.chat,
            max_new_tokens=config.max_new_tokens,
        )
        data = client.submit_proofs(submission)
    finally:
        if own_client:
            client.close()
    report = VerificationReport.model_validate(data)
    report.check_signed_by(platform_address, "verification report")
    return report
