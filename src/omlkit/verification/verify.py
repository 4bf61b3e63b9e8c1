"""Check a model against a fingerprint set through any backend and run the ownership test.

Each selected key is asked once (greedy); its answer is matched against the response (``exact``,
``prefix``, or ``rank`` — the response among the top-k first tokens, for 1-token responses). Keys
that got no answer are recorded with their error and left out of the test. With an output folder,
the per-key JSONL and the summary JSON are rewritten atomically after every chunk, so an interrupted
run resumes where it stopped: keys already answered without error are not asked again.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omlkit.errors import ConfigError, FingerprintFileError, RunDirError
from omlkit.fingerprints import Fingerprint, FingerprintSet
from omlkit.fingerprints.matching import MATCH_MODES, first_token_rank, response_matches, response_within
from omlkit.io import SECRET_MODE, atomic_write_json, atomic_write_text
from omlkit.verification.backends.base import Answer, Backend, Prompt, TokenBackend
from omlkit.verification.config import VerifyConfig
from omlkit.verification.ownership import (
    DEFAULT_ALPHA,
    OwnershipVerdict,
    calibrated_null_rates,
    null_rate,
    ownership_test,
)

#: Every ``match`` mode verification accepts: the text modes of ``matching`` plus first-token rank.
VERIFY_MATCH_MODES: tuple[str, ...] = (*MATCH_MODES, "rank", "within")
#: Match rules whose null rate is measured on a model never fingerprinted (not the strategy's bound).
CALIBRATED_MODES: tuple[str, ...] = ("rank", "within")
DEFAULT_WITHIN = 8
RECORDS_FILE = "verify.jsonl"
SUMMARY_FILE = "summary.json"
#: Settings a resumed run must share with the partial result it continues.
_BACKEND_IDENTITY = ("backend", "model", "endpoint")


@dataclass
class VerifyResult:
    """Per-key records (``id``, ``matched``, ``answer``, ``error``; ``rank`` in rank mode) and the verdict."""

    records: list[dict[str, Any]]
    verdict: OwnershipVerdict
    settings: dict[str, Any] = field(default_factory=dict)
    #: Ids the never-fingerprinted null model matched (rank / within matching; None otherwise): pass them
    #: as ``null_ids`` to a later verification with the same set and settings to skip recomputing them.
    null_ids: frozenset[int] | None = None

    @property
    def checked(self) -> int:
        """Keys answered (errors excluded) — the M of the ownership test."""
        return self.verdict.checked

    @property
    def matched(self) -> int:
        """Keys whose answer matched their response."""
        return self.verdict.matched

    @property
    def errors(self) -> int:
        """Keys that got no answer."""
        return sum(1 for r in self.records if r["error"] is not None)

    @property
    def accuracy(self) -> float:
        """matched / checked (0.0 when nothing was answered)."""
        return self.matched / self.checked if self.checked else 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary: counts, accuracy, the ownership test and the settings (no keys or answers)."""
        return {
            "checked": self.checked,
            "matched": self.matched,
            "errors": self.errors,
            "accuracy": self.accuracy,
            "ownership": self.verdict.as_dict(),
            "settings": self.settings,
        }


def default_max_new_tokens(fps: Sequence[Fingerprint], params: dict | None = None) -> int:
    """New tokens to generate: the longest response plus 2 (so ``exact`` sees the next word boundary).

    The response length is the strategy's ``response_length`` (tokens) when recorded, else the
    longest response in UTF-8 bytes (an upper bound on its tokens in any byte-level tokenizer). It
    depends on the fingerprint set only, so every backend generates the same number of tokens.
    """
    if params and isinstance(params.get("response_length"), int) and params["response_length"] > 0:
        longest = int(params["response_length"])
    else:
        longest = max(len(fp.response.encode("utf-8")) for fp in fps)
    return max(1, longest) + 2


def select_fingerprints(fp_set: FingerprintSet, sample: int | None, seed: int = 0) -> list[Fingerprint]:
    """All fingerprints, or a seeded random subset of ``sample`` of them in file order.

    Refuses (ConfigError) a sample size below 1 or above the number of fingerprints.
    """
    fps = list(fp_set.fingerprints)
    if sample is None:
        return fps
    if not 1 <= sample <= len(fps):
        raise ConfigError(f"--sample must be between 1 and {len(fps)} (the set's size), got {sample}")
    chosen = sorted(random.Random(seed).sample(range(len(fps)), sample))
    return [fps[i] for i in chosen]


def _prompts(fps: Sequence[Fingerprint], backend: Backend, system_prompt: str | None, chat: bool) -> list:
    """Token-id prompts for a TokenBackend (key ids spliced verbatim), else strings or chat messages."""
    from omlkit.models.prompts import PromptTemplates, render_prompt

    if isinstance(backend, TokenBackend):
        tok = backend.tokenizer
        templates = PromptTemplates(tok, chat)  # the same wrapping training used
        keys_ids = tok([fp.key for fp in fps], add_special_tokens=False)["input_ids"]
        try:
            return [templates(ids, system_prompt) for ids in keys_ids]
        except ValueError as exc:
            raise ConfigError(f"--chat: {exc}") from None
    if chat:
        sys_msg = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return [[*sys_msg, {"role": "user", "content": fp.key}] for fp in fps]
    return [render_prompt(None, fp.key, system_prompt=system_prompt, chat=False) for fp in fps]


def _ask(
    backend: Backend, prompts: list, match: str, rank_k: int, max_new_tokens: int
) -> list[tuple[Any, ...]]:
    """(answer text, error, candidates) per prompt."""
    token = isinstance(backend, TokenBackend)
    if match == "rank":
        cands = (
            backend.top_first_tokens_ids(prompts, rank_k)
            if token
            else backend.top_first_tokens(prompts, rank_k)
        )
        return [
            (c[0] if c else None, None if c else "backend returned no first-token candidates", c)
            for c in cands
        ]
    answers: list[Answer] = (
        backend.answer_ids(prompts, max_new_tokens) if token else backend.answer(prompts, max_new_tokens)
    )
    return [(a.text, a.error or (None if a.text is not None else "no answer"), None) for a in answers]


def _record(
    fp: Fingerprint, text: str | None, error: str | None, cands: list[str] | None, match: str, rank_k: int
) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": fp.id, "matched": False, "answer": text, "error": error}
    if error is None:
        if match == "rank":
            rank = first_token_rank(cands, fp.response)
            rec["rank"] = rank
            rec["matched"] = rank is not None and rank < rank_k
        elif match == "within":
            rec["matched"] = response_within(fp.response, text)
        else:
            rec["matched"] = response_matches(fp.response, text, match)
    return rec


def null_matched(
    fp_set: FingerprintSet,
    fps: Sequence[Fingerprint],
    null_model: Any,
    system_prompt: str | None,
    chat: bool,
    match: str,
    rank_k: int,
    max_new_tokens: int,
) -> set[int]:
    """Ids of ``fps`` that a model never fingerprinted also matches under ``match`` (same prompts, same
    tokens generated); ``null_model`` (a model, its path, or a backend) defaults to the model that
    generated the set."""
    from omlkit.verification.backends.transformers_backend import TransformersBackend

    reference = null_model or fp_set.generator.model
    if not reference:
        raise ConfigError(
            f"--match {match} needs a model never fingerprinted to calibrate its null rate: "
            "pass --null-model (the base model)"
        )
    backend = reference if isinstance(reference, Backend) else TransformersBackend(reference)
    prompts = _prompts(fps, backend, system_prompt, chat)
    asked = _ask(backend, prompts, match, rank_k, max_new_tokens)
    return {fp.id for fp, a in zip(fps, asked, strict=True) if _record(fp, *a, match, rank_k)["matched"]}


def _name(model: Any) -> str:
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    return str(getattr(model, "name_or_path", "") or type(model).__name__)


def _load_partial(out: Path, settings: dict[str, Any], force: bool) -> dict[int, dict[str, Any]]:
    """Records already answered without error in ``out`` for the same settings (empty when starting fresh)."""
    summary_path, records_path = out / SUMMARY_FILE, out / RECORDS_FILE
    if force or not summary_path.exists():
        return {}
    try:
        saved = json.loads(summary_path.read_text(encoding="utf-8"))["settings"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        raise RunDirError(
            f"{summary_path} is not a verification summary (pass --force to start over)"
        ) from None
    if _comparable(saved) != _comparable(settings):
        changed = sorted(
            k
            for k in set(_comparable(saved)) | set(_comparable(settings))
            if _comparable(saved).get(k) != _comparable(settings).get(k)
        )
        raise RunDirError(
            f"{out} holds a verification with other settings ({', '.join(changed)}); "
            "use another --out or --force to start over"
        )
    done: dict[int, dict[str, Any]] = {}
    if records_path.exists():
        for line in records_path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # unreadable: that key is simply asked again
            if isinstance(rec, dict) and rec.get("error") is None and "id" in rec:
                done[int(rec["id"])] = rec
    return done


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that change the answers (alpha does not: a resumed run may test at another level)."""
    backend = settings.get("backend") or {}
    return {
        **{k: v for k, v in settings.items() if k not in ("backend", "alpha")},
        **{f"backend.{k}": backend.get(k) for k in _BACKEND_IDENTITY},
    }


def _write(out: Path, records: list[dict[str, Any]], result: VerifyResult, complete: bool) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    atomic_write_text(out / RECORDS_FILE, text, mode=SECRET_MODE)
    atomic_write_json(out / SUMMARY_FILE, {**result.summary(), "complete": complete}, mode=SECRET_MODE)


def verify_fingerprints(
    fp_set: FingerprintSet | str | os.PathLike,
    backend: Backend,
    *,
    system_prompt: str | None = None,
    chat: bool = False,
    match: str = "exact",
    rank_k: int = 1,
    within: int = DEFAULT_WITHIN,
    null_model: Any = None,
    null_ids: Collection[int] | None = None,
    sample: int | None = None,
    seed: int = 0,
    alpha: float = DEFAULT_ALPHA,
    max_new_tokens: int | None = None,
    out: str | os.PathLike | None = None,
    force: bool = False,
    chunk_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyResult:
    """Ask ``backend`` every (or a ``sample`` of) key, match the answers, and run the ownership test.

    With ``out``, writes ``verify.jsonl`` (one record per key) and ``summary.json`` there atomically
    after each chunk of ``chunk_size`` keys and resumes a partial run with the same settings.
    Rank and ``within`` matching (the response anywhere in the first ``within`` + response-length answer
    tokens) calibrate their null rates on ``null_model`` (default: the model that generated the
    fingerprints; :func:`~omlkit.verification.ownership.calibrated_null_rates`); ``null_ids``, an earlier
    result's :attr:`VerifyResult.null_ids` under the same set, sample and settings, skips asking it again.
    Refuses: an unknown match mode, rank matching of multi-token responses or without a null model, a
    fingerprint file made for another tokenizer than a local backend's, chat mode without a chat
    template, and an ``out`` folder holding a verification with other settings (unless ``force``).
    """
    if not isinstance(fp_set, FingerprintSet):
        fp_set = FingerprintSet.load(fp_set)
    if match not in VERIFY_MATCH_MODES:
        raise ConfigError(f"--match must be one of {', '.join(VERIFY_MATCH_MODES)} (got {match!r})")
    if match == "rank":
        if rank_k < 1:
            raise ConfigError(f"--rank-k must be >= 1 (got {rank_k})")
        length = fp_set.strategy.params.get("response_length", 1)
        if isinstance(length, int) and length > 1:
            raise FingerprintFileError(
                f"--match rank needs 1-token responses; this set has response_length {length}"
            )
    if match == "within" and within < 1:
        raise ConfigError(f"--within must be >= 1 (got {within})")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1 (got {chunk_size})")
    tokenizer = backend.tokenizer if isinstance(backend, TokenBackend) else None
    if tokenizer is not None:
        fp_set.check_tokenizer(tokenizer)
    fps = select_fingerprints(fp_set, sample, seed)
    if max_new_tokens is None:
        max_new_tokens = default_max_new_tokens(fps, fp_set.strategy.params)
        max_new_tokens += within if match == "within" else 0
    calibrated = match in CALIBRATED_MODES
    if not calibrated:
        null_ids = None
    elif null_ids is None:
        null_ids = null_matched(fp_set, fps, null_model, system_prompt, chat, match, rank_k, max_new_tokens)
    null_ids = None if null_ids is None else frozenset(null_ids)
    settings = {
        "fingerprints_sha256": fp_set.content_hash(),
        "n_fingerprints": len(fp_set),
        "match": match,
        "rank_k": rank_k if match == "rank" else None,
        "within": within if match == "within" else None,
        "null_model": _name(null_model or fp_set.generator.model) if calibrated else None,
        "null_matched": None if null_ids is None else len(null_ids),
        "chat": chat,
        "system_prompt": system_prompt,
        "sample": sample,
        "seed": seed,
        "alpha": alpha,
        "max_new_tokens": max_new_tokens,
        "backend": backend.describe(),
    }
    out_dir = Path(out) if out is not None else None
    done = _load_partial(out_dir, settings, force) if out_dir is not None else {}
    by_id = {fp.id: fp for fp in fps}
    records: dict[int, dict[str, Any]] = {i: r for i, r in done.items() if i in by_id}
    todo = [fp for fp in fps if fp.id not in records]

    def result() -> VerifyResult:
        ordered = [records[fp.id] for fp in fps if fp.id in records]
        answered = [by_id[r["id"]] for r in ordered if r["error"] is None]
        n_match = sum(1 for r in ordered if r["error"] is None and r["matched"])
        rates = (
            [null_rate(fp_set, fp) for fp in answered]
            if null_ids is None
            else calibrated_null_rates(fp_set, answered, null_ids)
        )
        verdict = ownership_test(rates, n_match, alpha)
        return VerifyResult(ordered, verdict, settings, null_ids=null_ids)

    for start in range(0, len(todo), chunk_size):
        chunk = todo[start : start + chunk_size]
        prompts: list[Prompt] = _prompts(chunk, backend, system_prompt, chat)
        for fp, (text, err, cands) in zip(
            chunk, _ask(backend, prompts, match, rank_k, max_new_tokens), strict=True
        ):
            records[fp.id] = _record(fp, text, err, cands, match, rank_k)
        if out_dir is not None:
            partial = result()
            _write(out_dir, partial.records, partial, complete=False)
        if progress is not None:
            progress(len(records), len(fps))
    final = result()
    if out_dir is not None:
        _write(out_dir, final.records, final, complete=True)
    return final


def verify_model(
    model_or_path: Any,
    fp_set: FingerprintSet | str | os.PathLike,
    *,
    tokenizer: Any = None,
    batch_size: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    **kw: Any,
) -> VerifyResult:
    """:func:`verify_fingerprints` on a local model (a loaded model object, a path, or an embedded name)
    through the transformers backend; ``kw`` are verify_fingerprints' keyword arguments."""
    from omlkit.verification.backends.transformers_backend import DEFAULT_BATCH_SIZE, TransformersBackend

    backend = TransformersBackend(
        model_or_path, tokenizer, batch_size=batch_size or DEFAULT_BATCH_SIZE, device=device, dtype=dtype
    )
    return verify_fingerprints(fp_set, backend, **kw)


def backend_name(cfg: VerifyConfig) -> str:
    """The backend ``cfg`` names: ``--backend``, or (auto) http for an endpoint, transformers for a model."""
    return cfg.backend if cfg.backend != "auto" else ("http" if cfg.endpoint else "transformers")


def verify_with_config(
    cfg: VerifyConfig,
    fp_set: FingerprintSet | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyResult:
    """Verify as ``cfg`` says (its backend, matching, sample, output folder); ``fp_set`` defaults to
    ``cfg.fingerprints``. What :func:`verify_fingerprints` refuses, this refuses."""
    from omlkit.verification.backends import BACKENDS

    name = backend_name(cfg)
    backend_cls = BACKENDS.get(name)
    with backend_cls.from_config(cfg, cfg.options_for(name, backend_cls)) as backend:
        if cfg.formats:
            from omlkit.verification.formats import verify_across_formats

            return verify_across_formats(
                fp_set if fp_set is not None else FingerprintSet.load(cfg.fingerprints),
                backend,
                cfg.formats,
                probe=cfg.probe,
                match=cfg.match,
                sample=cfg.sample,
                seed=cfg.seed,
                alpha=cfg.alpha,
                max_new_tokens=cfg.max_new_tokens,
            )
        return verify_fingerprints(
            fp_set if fp_set is not None else cfg.fingerprints,
            backend,
            system_prompt=cfg.system_prompt,
            chat=cfg.chat,
            match=cfg.match,
            rank_k=cfg.rank_k,
            within=cfg.within,
            null_model=cfg.null_model,
            sample=cfg.sample,
            seed=cfg.seed,
            alpha=cfg.alpha,
            max_new_tokens=cfg.max_new_tokens,
            out=cfg.out,
            force=cfg.force,
            progress=progress,
        )
