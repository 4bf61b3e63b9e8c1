"""Batched greedy decoding on token ids (``omlkit.models.decoding``), and the fingerprint-recovery
check built on it.

Both benign-target generation and the early-stop check use one left-padded batch per chunk, so a
whole fingerprint set is checked in a handful of forward passes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from omlkit.fingerprints.matching import response_matches
from omlkit.models.decoding import greedy_batch
from omlkit.models.logits import eval_mode, pad_batch, pad_id


def _unwrap(model):
    return getattr(model, "module", model)


@torch.no_grad()
def greedy_generate(
    model, prompts: Sequence[Sequence[int]], max_new_tokens: int, pad_id: int, eos_id: int | None,
    batch_size: int = 256,
) -> list[list[int]]:
    """Greedy continuations (token ids, cut after the first EOS) of each prompt, in order.

    Prompts are left-padded into batches of ``batch_size``; the model's training mode is restored.
    """
    model = _unwrap(model)
    device = next(model.parameters()).device
    out: list[list[int]] = []
    with eval_mode(model):
        for start in range(0, len(prompts), batch_size):
            ids, mask = pad_batch(prompts[start : start + batch_size], pad_id, left=True)
            eos = [eos_id] if eos_id is not None else []
            gen = greedy_batch(model, ids.to(device), mask.to(device), max_new_tokens, pad_id, eos).ids
            for row in gen.tolist():
                if eos_id is not None and eos_id in row:
                    row = row[: row.index(eos_id) + 1]
                out.append(row)
    return out


def recovered(model, tokenizer, prompts: Sequence[Sequence[int]], responses: Sequence[str],
              response_lengths: Sequence[int], match: str = "exact", batch_size: int = 256) -> list[bool]:
    """For each prompt, whether greedy decoding reproduces its response (``response_matches``).

    Generates ``max(response_lengths) + 1`` tokens so the word-boundary rule of exact matching can see
    what follows the response.
    """
    gens = greedy_generate(model, prompts, max(response_lengths) + 1, pad_id(tokenizer),
                           tokenizer.eos_token_id, batch_size)
    answers = [tokenizer.decode(g, skip_special_tokens=True) for g in gens]
    return [response_matches(r, a, match) for r, a in zip(responses, answers, strict=True)]
