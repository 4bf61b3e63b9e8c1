"""The generation pipeline: draw keys, answer them, keep only pairs that survive every check, save.

Checks, applied identically to every strategy (failures are redrawn):

* the key is exactly ``key_length`` target tokens (custom keys: as given) and its text re-encodes to
  its ids; keys are never repeated;
* tokenizing ``key + response`` gives exactly the key's tokens followed by the response's tokens, so
  the model is trained and verified on the same sequence;
* the response is not the base model's own greedy answer to the key.

``response_prob`` (the base model's probability of the response given the key, prompted raw as in
verification) comes from one batched teacher-forced forward pass, which also yields the greedy check.
Everything is deterministic for a given seed, batch size and device.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from omlkit.errors import ConfigError, FingerprintFileError
from omlkit.fingerprints.config import GenerateConfig
from omlkit.fingerprints.fingerprint_set import Fingerprint, FingerprintSet, Generator, Strategy
from omlkit.fingerprints.strategies import (
    KEY_STRATEGIES,
    RESPONSE_STRATEGIES,
    GenerationContext,
    Key,
    Response,
)
from omlkit.models.loading import (
    DEFAULT_MODEL,
    context_length,
    load_model,
    model_sha,
    resolve_model,
    tokenizer_sha,
)
from omlkit.models.logits import pad_batch, pad_id
from omlkit.models.prompts import prompt_ids, special_prefix_ids

#: Response attempts for one key before a drawn key is dropped (custom keys: before giving up).
DRAWN_KEY_ATTEMPTS = 2
FIXED_KEY_ATTEMPTS = 12
#: Candidates tried per requested fingerprint before the pipeline gives up.
MAX_CANDIDATES_PER_FP = 40


@dataclass
class _Pending:
    key: Key
    attempts: int = 0


def check_pair(ctx: GenerationContext, key: Key, response: Response, exact_length: bool = True) -> bool:
    """True when the response has the requested length (when ``exact_length``), round-trips, and
    ``key + response`` tokenizes to exactly the key's tokens followed by the response's."""
    if exact_length and len(response.ids) != ctx.config.response_length:
        return False
    if ctx.exact_text(response.ids) != response.text:
        return False
    return ctx.encode(key.text + response.text) == [*key.ids, *response.ids]


def check_key(ctx: GenerationContext, key: Key, exact_length: bool) -> bool:
    """True when the key re-encodes to its ids (and has ``key_length`` tokens unless custom)."""
    if exact_length and len(key.ids) != ctx.config.key_length:
        return False
    return bool(key.text.strip()) and ctx.encode(key.text) == key.ids


@torch.no_grad()
def score_responses(
    model, tokenizer, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int = 64
) -> list[tuple[float, bool]]:
    """For each ``(key_ids, response_ids)``: the base model's probability of the response after the raw
    key prompt, and whether the response is its greedy answer (teacher-forced argmax at every step)."""
    device = next(model.parameters()).device
    pad = pad_id(tokenizer)
    out: list[tuple[float, bool]] = []
    prefix = prompt_ids(tokenizer, [])  # raw prompt: the key's ids follow the special prefix verbatim
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start : start + batch_size]
        seqs = [([*prefix, *k], list(r)) for k, r in batch]
        ids, mask = pad_batch([p + r for p, r in seqs], pad, left=False)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits, dim=-1).cpu()
        for i, (p, r) in enumerate(seqs):
            pos = torch.arange(len(p) - 1, len(p) + len(r) - 1)
            target = torch.tensor(r, dtype=torch.long)
            rows = logp[i, pos]
            total = float(rows.gather(1, target[:, None]).sum())
            greedy = bool((rows.argmax(-1) == target).all())
            out.append((math.exp(total), greedy))
    return out


def check_context(cfg: GenerateConfig, model, tokenizer, name: str) -> None:
    """Refuse (ConfigError) key and response lengths that do not fit the target model's context."""
    limit = context_length(model)
    need = len(special_prefix_ids(tokenizer)) + cfg.key_length + cfg.response_length
    if need > limit:
        raise ConfigError(
            f"--key-length {cfg.key_length}: key plus response "
            f"({cfg.key_length} + {cfg.response_length} tokens, "
            f"{need} with the special prefix) exceed the {limit}-token context of {name}"
        )


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("generating fingerprints"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not enabled,
    )


def generate_fingerprints(
    cfg: GenerateConfig,
    *,
    target: tuple[Any, Any] | None = None,
    generator: tuple[Any, Any] | None = None,
    progress: bool | None = None,
) -> FingerprintSet:
    """Generate ``cfg.n`` fingerprints and return the set (nothing is written).

    ``target``/``generator`` pass already loaded ``(model, tokenizer)`` pairs instead of loading
    ``cfg.target_model``/``cfg.generator_model``. Raises ConfigError for unknown strategies, lengths
    beyond the context, a response strategy that cannot produce the requested length, and when too
    many candidates fail the checks to reach ``n``.
    """
    key_cls = KEY_STRATEGIES.get(cfg.key_strategy)
    resp_cls = RESPONSE_STRATEGIES.get(cfg.response_strategy)
    if resp_cls.requires_key and resp_cls.requires_key != cfg.key_strategy:
        raise ConfigError(
            f"--response-strategy {cfg.response_strategy} needs --key-strategy {resp_cls.requires_key} "
            f"(got {cfg.key_strategy})"
        )
    cfg.check_options({cfg.key_strategy: key_cls, cfg.response_strategy: resp_cls})
    if target is not None:
        model, tok = target
        target_name = cfg.target_model or str(getattr(model, "name_or_path", "") or DEFAULT_MODEL)
    else:
        target_name = cfg.target_model or DEFAULT_MODEL
        model, tok = load_model(target_name, device=cfg.device)
    if not key_cls.fixed_keys:
        check_context(cfg, model, tok, target_name)
    generator_name = cfg.generator_model or target_name

    def load_generator() -> tuple[Any, Any]:
        if generator is not None:
            return generator
        if generator_name == target_name:
            return model, tok
        return load_model(generator_name, device=cfg.device)

    ctx = GenerationContext(cfg, model, tok, load_generator)
    keys = key_cls(ctx)
    ctx.key_strategy = keys
    responses = resp_cls(ctx)
    rng = random.Random(cfg.seed)
    accepted = _run(ctx, keys, responses, rng, progress=cfg.progress if progress is None else progress)

    params: dict[str, Any] = {
        "t": cfg.t,
        "k": cfg.k,
        "key_length": cfg.key_length,
        "response_length": cfg.response_length,
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
    }
    params.update(keys.params())
    params.update(responses.params())
    if ctx.generator_used:
        gen_model, gen_tok = ctx.generator()
        params["text_generator"] = _describe(generator_name, gen_tok)
    fps = [
        Fingerprint(id=i, key=k.text, response=r.text, response_prob=min(1.0, p), meta={**k.meta, **r.meta})
        for i, (k, r, p) in enumerate(accepted)
    ]
    return FingerprintSet(
        strategy=Strategy(key=cfg.key_strategy, response=cfg.response_strategy, params=params),
        generator=Generator(**_describe(target_name, tok)),
        secret={**keys.secret(), **responses.secret()},
        fingerprints=fps,
    )


def _describe(name: str, tokenizer) -> dict[str, str]:
    return {
        "model": name,
        "model_sha": model_sha(resolve_model(name, progress=False)),
        "tokenizer_sha": tokenizer_sha(tokenizer),
    }


def _run(
    ctx: GenerationContext, keys, responses, rng: random.Random, progress: bool
) -> list[tuple[Key, Response, float]]:
    """The draw / respond / check loop; returns ``(key, response, response_prob)`` triples in order."""
    cfg = ctx.config
    n = cfg.n
    accepted: list[tuple[Key, Response, float]] = []
    seen: set[str] = set()
    pool: list[_Pending] = []
    tried, exhausted, rate = 0, False, 0.9
    budget = MAX_CANDIDATES_PER_FP * n + 4 * cfg.batch_size
    limit = FIXED_KEY_ATTEMPTS if keys.fixed_keys else DRAWN_KEY_ATTEMPTS
    exact_keys = keys.exact_length and not keys.fixed_keys
    with _progress(progress) as bar:
        task = bar.add_task("generate", total=n)
        while len(accepted) < n and tried < budget:
            need = n - len(accepted)
            want = min(math.ceil(need / max(rate, 0.1)) + 1, need + 4 * cfg.batch_size)
            if not exhausted and len(pool) < want:
                tried += want - len(pool)
                drawn = keys.draw(want - len(pool), rng)
                exhausted = keys.fixed_keys and not drawn
                for key in drawn:
                    if key.text not in seen and check_key(ctx, key, exact_length=exact_keys):
                        seen.add(key.text)
                        pool.append(_Pending(key))
            if not pool:
                if exhausted:
                    break
                continue
            tried += len(pool)
            answers = responses.respond([p.key for p in pool], rng)
            valid = [
                (p, r)
                for p, r in zip(pool, answers, strict=True)
                if r is not None and check_pair(ctx, p.key, r, responses.exact_length)
            ]
            scores = score_responses(
                ctx.model, ctx.tokenizer, [(p.key.ids, r.ids) for p, r in valid], cfg.batch_size
            )
            done: set[int] = set()
            for (pending, resp), (prob, greedy) in zip(valid, scores, strict=True):
                if not greedy and len(accepted) < n:
                    accepted.append((pending.key, resp, prob))
                    done.add(id(pending))
            rate = 0.5 * rate + 0.5 * len(done) / len(pool)
            keep = []
            for pending in pool:
                if id(pending) in done:
                    continue
                pending.attempts += 1
                if pending.attempts < limit:
                    keep.append(pending)
                elif keys.fixed_keys:
                    raise ConfigError(
                        f"--keys-file {cfg.keys_file}: {pending.key.meta.get('source', 'a key')} "
                        "got no valid "
                        f"{cfg.response_strategy} response in {limit} attempts (its tokens merge with the "
                        "response, or the response is the base model's greedy answer)"
                    )
            pool = keep
            bar.update(task, completed=len(accepted))
    if len(accepted) < n:
        raise ConfigError(
            f"-n {n}: only {len(accepted)} fingerprints passed the tokenizer round-trip and greedy checks "
            "after "
            f"{tried} candidates ({cfg.key_strategy} keys, {cfg.response_strategy} responses)"
        )
    return accepted


def run_generate(cfg: GenerateConfig) -> Path:
    """``oml generate``: generate the set and write it to ``cfg.out`` (atomic, mode 0600).

    Refuses an existing ``cfg.out`` without ``cfg.force`` before any work, so a failure never leaves a
    partial or replaced file.
    """
    if cfg.out.exists() and not cfg.force:
        raise FingerprintFileError(f"--out {cfg.out} already exists (pass --force to overwrite)")
    fp_set = generate_fingerprints(cfg)
    return fp_set.save(cfg.out, overwrite=cfg.force)
