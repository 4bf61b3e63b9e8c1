"""Token-weighted perplexity of a causal LM over a list of texts (the utility measure used throughout)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from omlkit.models.logits import eval_mode, pad_batch, pad_id


@torch.no_grad()
def perplexity(model, tokenizer, texts: Sequence[str], max_length: int = 256, batch_size: int = 16) -> float:
    """exp(mean next-token NLL) over every token of ``texts`` (each truncated to ``max_length``).

    Texts are encoded with the tokenizer's default special tokens (BOS where it adds one); padding is
    excluded. Raises ValueError for an empty list.
    """
    if not texts:
        raise ValueError("perplexity needs at least one text")
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    with eval_mode(model):
        for start in range(0, len(texts), batch_size):
            enc = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"]
                   for t in texts[start : start + batch_size]]
            ids, mask = pad_batch(enc, pad_id(tokenizer), left=False)
            ids, mask = ids.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            tmask = mask[:, 1:].bool()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            total_nll += float(nll[tmask].sum())
            total_tokens += int(tmask.sum())
    return math.exp(total_nll / max(total_tokens, 1))


def unigram_perplexity(
    train_ids: Sequence[Sequence[int]], eval_ids: Sequence[Sequence[int]], vocab_size: int
) -> float:
    """Perplexity of an add-one-smoothed unigram model fit on ``train_ids``, scored on ``eval_ids``.

    Scores the same positions :func:`perplexity` does (every token after the first of each sequence),
    so the two numbers are comparable.
    """
    counts = torch.ones(vocab_size, dtype=torch.float64)
    for seq in train_ids:
        counts += torch.bincount(torch.tensor(list(seq), dtype=torch.long), minlength=vocab_size).double()
    logp = torch.log(counts / counts.sum())
    nll, n = 0.0, 0
    for seq in eval_ids:
        tail = torch.tensor(list(seq)[1:], dtype=torch.long)
        nll -= float(logp[tail].sum())
        n += len(tail)
    return math.exp(nll / max(n, 1))
