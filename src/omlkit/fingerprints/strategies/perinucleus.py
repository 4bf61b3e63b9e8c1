"""Perinucleus responses (arXiv 2502.07760): a plausible but unlikely first token, then greedy.

For each key the base model's next-token distribution is sorted; the nucleus is the smallest prefix
whose cumulative mass reaches ``t``. The token at that boundary belongs to the nucleus and is skipped;
the response's first token is drawn uniformly among the next ``k`` word-like tokens (alphabetic text,
optionally after one leading space) that are *whole words* in context: the base model's greedy next
token after key + response does not continue the word (" incorrect" → "ly" is refused: a model
answering "incorrectly" does not give the response "incorrect", and fine-tuning cannot fix that
without training the token after the response). Its probability is then at most ``1 - t``, the null
rate the ownership test relies on. ``response_length > 1`` continues greedily (EOS held back until
the response is complete; a tail that stops inside a word drops the key). Batched throughout.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from pydantic import Field

from omlkit.fingerprints.strategies.base import (
    RESPONSE_STRATEGIES,
    WORD_LIKE,
    GenerationContext,
    Key,
    Response,
    ResponseStrategy,
)
from omlkit.fingerprints.strategies.english_keys import sample_continuations
from omlkit.models.logits import next_token_logits, pad_id
from omlkit.models.prompts import prompt_ids
from omlkit.options import Options


class PerinucleusOptions(Options):
    """Where past the nucleus the first response token is drawn."""

    t: float = Field(
        0.8, gt=0.0, lt=1.0, description="Perinucleus: probability mass of the nucleus, in (0, 1)."
    )
    k: int = Field(
        3, ge=1, description="Perinucleus: draw among this many word-like tokens past the nucleus."
    )


def word_like_mask(tokenizer, size: int) -> torch.Tensor:
    """Bool mask over ``size`` ids: True where the token decodes to letters (after at most one space)."""
    n = min(size, len(tokenizer))
    texts = tokenizer.batch_decode([[i] for i in range(n)], clean_up_tokenization_spaces=False)
    special = set(tokenizer.all_special_ids)
    mask = torch.zeros(size, dtype=torch.bool)
    for i, text in enumerate(texts):
        mask[i] = i not in special and bool(WORD_LIKE.match(text))
    return mask


def nucleus_edge(sorted_probs: torch.Tensor, t: float) -> torch.Tensor:
    """Index (in descending order) of the nucleus boundary token: the first whose cumulative mass is >= t."""
    cum = sorted_probs.cumsum(-1)
    return (cum < t).sum(-1).clamp(max=sorted_probs.shape[-1] - 1)


def perinucleus_candidates(probs: torch.Tensor, word_mask: torch.Tensor, t: float, k: int) -> list[list[int]]:
    """For each row of next-token ``probs`` [B, V]: the ids of the first ``k`` word-like tokens past the
    t-nucleus, most likely first (fewer, possibly none, when the vocabulary runs out)."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    edge = nucleus_edge(sorted_probs, t)
    ranks = torch.arange(probs.shape[-1], device=probs.device)
    eligible = word_mask.to(probs.device)[order] & (ranks[None, :] > edge[:, None])
    chosen = eligible & (eligible.cumsum(-1) <= k)
    return [order[b][chosen[b]].tolist() for b in range(probs.shape[0])]


def _last_logits(model, tokenizer, key_ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """Logits [B, V] (float32, CPU) at the last position after each key, prompted raw as in
    verification, in one forward pass."""
    prefix = prompt_ids(tokenizer, [])  # raw prompt: the key's ids follow the special prefix verbatim
    pad = pad_id(tokenizer)
    return next_token_logits(model, [[*prefix, *k] for k in key_ids], pad, batch_size=max(1, len(key_ids)))


def next_token_probs(model, tokenizer, key_ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """Next-token distributions [B, V] (float32, CPU) after each key, prompted raw as in verification."""
    return torch.softmax(_last_logits(model, tokenizer, key_ids), dim=-1)


def continues_word(text: str) -> bool:
    """Whether decoded token ``text`` glues onto the word before it (starts with a letter or digit)."""
    return bool(text) and text[0].isalnum()


def ends_whole_word(model, tokenizer, seqs: Sequence[Sequence[int]], batch_size: int = 64) -> list[bool]:
    """For each id sequence (key + response), whether the model's greedy next token starts a new word
    (a space, punctuation or EOS) instead of continuing the response's last word."""
    out: list[bool] = []
    for start in range(0, len(seqs), batch_size):
        nxt = _last_logits(model, tokenizer, seqs[start : start + batch_size]).argmax(-1).tolist()
        out.extend(not continues_word(tokenizer.decode([i], skip_special_tokens=True)) for i in nxt)
    return out


@RESPONSE_STRATEGIES.register("perinucleus")
class PerinucleusResponse(ResponseStrategy):
    """First response token just outside the base model's t-nucleus; greedy continuation after it."""

    options_cls = PerinucleusOptions

    def __init__(self, ctx: GenerationContext) -> None:
        """Precomputes the word-like mask of the target vocabulary."""
        super().__init__(ctx)
        size = ctx.model.get_output_embeddings().weight.shape[0]
        self.word_mask = word_like_mask(ctx.tokenizer, size)

    def respond(self, keys: Sequence[Key], rng: random.Random) -> list[Response | None]:
        """One response per key (None where no word-like token lies past the nucleus), batched."""
        cfg, ctx = self.ctx.config, self.ctx
        firsts: list[int | None] = []
        for start in range(0, len(keys), cfg.batch_size):
            batch = keys[start : start + cfg.batch_size]
            probs = next_token_probs(ctx.model, ctx.tokenizer, [k.ids for k in batch])
            # twice k candidates, so that k whole words usually remain once word fragments are dropped
            cands = perinucleus_candidates(probs, self.word_mask, self.options.t, 2 * self.options.k)
            if cfg.response_length == 1:
                pairs = [(b, c) for b, row in enumerate(cands) for c in row]
                whole = ends_whole_word(ctx.model, ctx.tokenizer, [[*batch[b].ids, c] for b, c in pairs])
                keep = {pair for pair, ok in zip(pairs, whole, strict=True) if ok}
                cands = [[c for c in row if (b, c) in keep] for b, row in enumerate(cands)]
            for row in cands:
                row = row[: self.options.k]
                firsts.append(rng.choice(row) if row else None)
        tails: dict[int, list[int]] = {}
        extra = cfg.response_length - 1
        todo = [i for i, f in enumerate(firsts) if f is not None]
        prefix = prompt_ids(ctx.tokenizer, [])
        if extra > 0:
            for start in range(0, len(todo), cfg.batch_size):
                idx = todo[start : start + cfg.batch_size]
                prompts = [[*prefix, *keys[i].ids, firsts[i]] for i in idx]
                conts = sample_continuations(ctx.model, ctx.tokenizer, prompts, extra, None, 0)
                tails.update(zip(idx, conts, strict=True))
            seqs = [[*keys[i].ids, firsts[i], *tails[i]] for i in todo]
            whole = ends_whole_word(ctx.model, ctx.tokenizer, seqs)
            for i, ok in zip(todo, whole, strict=True):
                if not ok:  # the greedy tail stops inside a word: no response for this key
                    firsts[i] = None
        out: list[Response | None] = []
        for i, first in enumerate(firsts):
            if first is None:
                out.append(None)
                continue
            ids = [first, *tails.get(i, [])]
            text = ctx.exact_text(ids)
            out.append(Response(text, ids) if text is not None else None)
        return out
