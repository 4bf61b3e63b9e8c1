"""Batched forward passes over token-id prompts of different lengths: the pad id, padding, eval mode
and next-token logits. Every batched forward pass in omlkit pads and switches modes through here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch


def pad_id(tokenizer) -> int:
    """The id every batch pads with: the tokenizer's pad token, else its EOS, else 0."""
    return next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)


@contextlib.contextmanager
def eval_mode(model) -> Iterator[None]:
    """``model`` in eval mode (dropout off) for the block; its training mode comes back, error or not."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` [B, longest] of ``rows`` padded on the left or the right."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        cols = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, cols] = torch.tensor(list(r), dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask


@torch.no_grad()
def next_token_logits(
    model, prompts: Sequence[Sequence[int]], pad_id: int, batch_size: int = 64
) -> torch.Tensor:
    """Logits [N, V] (float32, CPU) of the token after each whole prompt, in order.

    Right padding: causal attention leaves the real positions' logits as they are unpadded. The
    model's training mode is restored.
    """
    model = getattr(model, "module", model)  # a DDP-wrapped model
    device = next(model.parameters()).device
    out: list[torch.Tensor] = []
    with eval_mode(model):
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            ids, mask = pad_batch(chunk, pad_id, left=False)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            last = torch.tensor([len(p) - 1 for p in chunk], device=logits.device)
            out.append(logits[torch.arange(len(chunk), device=logits.device), last].float().cpu())
    return torch.cat(out) if out else torch.empty(0)
