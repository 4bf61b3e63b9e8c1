"""Verification when the host's serving format is unknown: probe a few keys in every format, then spend
the rest in the one that answers.

Every key sent is spent, whatever the format it was sent in, and a key asked in a format the host does
not serve matches nothing: the whole set can be wasted on the wrong guess. So the first ``probe`` keys
(of the seeded order) are asked in every candidate format (:mod:`omlkit.models.formats`); the format
with the most matches is chosen (ties: the order given) and every other key is asked in it alone.

An endpoint is asked in the formats a text API can express (:data:`ENDPOINT_FORMATS`): a completion of
the key (``raw``: the server adds BOS or not, as it is set up), chat completions with and without a
system message, and a ``User:/Assistant:`` transcript as a completion.

The ownership test stays sound across the choice: a probe key counts as matched when *any* format
matched, so its null rate is the union bound ``min(1, F · p0)`` over the F formats; the remaining keys
were asked in one format fixed before they were sent, so they keep ``p0``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from omlkit.errors import ConfigError
from omlkit.fingerprints import Fingerprint, FingerprintSet
from omlkit.fingerprints.matching import response_matches
from omlkit.models.formats import FORMATS, HOST_SYSTEM_PROMPT, format_builders
from omlkit.verification.backends.base import Prompt, TokenBackend
from omlkit.verification.ownership import DEFAULT_ALPHA, null_rate, ownership_test
from omlkit.verification.verify import VerifyResult, default_max_new_tokens, select_fingerprints

#: The formats an endpoint can be asked in: ``key text -> completion text or chat messages``.
ENDPOINT_FORMATS: dict[str, Callable[[str], Prompt]] = {
    "raw": lambda key: key,
    "chat": lambda key: [{"role": "user", "content": key}],
    "chat-system": lambda key: [{"role": "system", "content": HOST_SYSTEM_PROMPT},
                                {"role": "user", "content": key}],
    "dialog": lambda key: f"User: {key}\nAssistant:",
}


def ask_in_format(
    backend: Any, fps: Sequence[Fingerprint], wrap, max_new_tokens: int, match: str
) -> list[dict]:
    """One record (``id``, ``answer``, ``error``, ``matched``) per key asked in the format ``wrap``
    builds: from key ids for a local model (:class:`TokenBackend`), from key text for an endpoint."""
    if not fps:
        return []
    if isinstance(backend, TokenBackend):
        keys = backend.tokenizer([fp.key for fp in fps], add_special_tokens=False)["input_ids"]
        answers = backend.answer_ids([wrap(k) for k in keys], max_new_tokens)
    else:
        answers = backend.answer([wrap(fp.key) for fp in fps], max_new_tokens)
    return [
        {
            "id": fp.id,
            "answer": a.text,
            "error": a.error,
            "matched": a.error is None and response_matches(fp.response, a.text, match),
        }
        for fp, a in zip(fps, answers, strict=True)
    ]


def verify_across_formats(
    fp_set: FingerprintSet,
    backend: Any,
    formats: Sequence[str],
    *,
    probe: int = 8,
    match: str = "exact",
    sample: int | None = None,
    seed: int = 0,
    alpha: float = DEFAULT_ALPHA,
    max_new_tokens: int | None = None,
) -> VerifyResult:
    """Probe ``probe`` keys in every format of ``formats``, answer the rest in the best one, and test.

    Records carry the ``format`` each key was decided in (``"any"`` for probe keys). Refuses: an unknown
    format, one the tokenizer cannot express (a local model) or a text API cannot (an endpoint:
    ``raw-no-bos``), fewer than two formats, rank or within matching, and a probe of no keys.
    """
    if match in ("rank", "within"):
        raise ConfigError(f"--formats matches answers exactly or by prefix, not --match {match}")
    if probe < 1:
        raise ConfigError(f"--probe must be >= 1 (got {probe})")
    unknown = [f for f in formats if f not in FORMATS.names()]
    if unknown:
        raise ConfigError(f"--formats: unknown format {unknown[0]!r} (see `oml list prompt-format`)")
    builders = _builders(backend, list(dict.fromkeys(formats)))
    if len(builders) < 2:
        raise ConfigError("--formats needs at least two formats to choose from")
    if isinstance(backend, TokenBackend):
        fp_set.check_tokenizer(backend.tokenizer)
    fps = select_fingerprints(fp_set, sample, seed)
    max_new_tokens = max_new_tokens or default_max_new_tokens(fps, fp_set.strategy.params)
    probed, rest = fps[:probe], fps[probe:]
    def ask(fps_: Sequence[Fingerprint], name: str) -> list[dict]:
        return ask_in_format(backend, fps_, builders[name], max_new_tokens, match)

    per_format = {name: ask(probed, name) for name in builders}
    hits = {name: sum(r["matched"] for r in recs) for name, recs in per_format.items()}
    chosen = max(builders, key=lambda name: hits[name])  # first of the best, in the order given
    records = [_probe_record(i, per_format) for i in range(len(probed))]
    records += [{**r, "format": chosen} for r in ask(rest, chosen)]
    answered = {r["id"] for r in records if r["error"] is None}
    union = len(builders)
    rates = [min(1.0, union * null_rate(fp_set, fp)) for fp in probed if fp.id in answered]
    rates += [null_rate(fp_set, fp) for fp in rest if fp.id in answered]
    verdict = ownership_test(rates, sum(r["matched"] for r in records if r["error"] is None), alpha)
    settings = {
        "fingerprints_sha256": fp_set.content_hash(),
        "n_fingerprints": len(fp_set),
        "match": match,
        "formats": list(builders),
        "probe": len(probed),
        "probe_matched": hits,
        "chosen_format": chosen,
        "sample": sample,
        "seed": seed,
        "alpha": alpha,
        "max_new_tokens": max_new_tokens,
        "backend": backend.describe(),
    }
    return VerifyResult(records, verdict, settings)


def _builders(backend: Any, formats: list[str]) -> dict:
    """``{name: wrap}`` for a local model (key ids) or an endpoint (key text); refuses a format the
    backend cannot be asked in."""
    if not isinstance(backend, TokenBackend):
        missing = [f for f in formats if f not in ENDPOINT_FORMATS]
        if missing:
            raise ConfigError(f"--formats {missing[0]}: an endpoint cannot be asked in it (the server adds "
                              f"BOS as it is set up; endpoint formats: {', '.join(ENDPOINT_FORMATS)})")
        return {f: ENDPOINT_FORMATS[f] for f in formats}
    builders = format_builders(backend.tokenizer, formats)
    missing = [f for f in formats if f not in builders]
    if missing:
        raise ConfigError(f"--formats {missing[0]}: this tokenizer has no chat template")
    return builders


def _probe_record(i: int, per_format: dict[str, list[dict]]) -> dict:
    """A probe key's record: matched in any format (its answer from the first that matched)."""
    recs = {name: recs[i] for name, recs in per_format.items()}
    hit = next((r for r in recs.values() if r["matched"]), None)
    answered = next((r for r in recs.values() if r["error"] is None), None)
    first = hit or answered or next(iter(recs.values()))
    errors = [r["error"] for r in recs.values() if r["error"] is not None]
    error = errors[0] if len(errors) == len(recs) else None
    return {**first, "error": error, "matched": hit is not None, "format": "any"}
