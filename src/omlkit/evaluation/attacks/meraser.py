"""MEraser (ACL 2025): erase backdoor fingerprints by fine-tuning on mismatched pairs, then clean ones.

A memorised fingerprint is a learned input → output shortcut. Phase one fine-tunes on ``N`` *mismatched*
pairs: openings of the attacker's text, each followed by the continuation of another text, so the model
unlearns answering an input with what was trained to follow it. Phase two fine-tunes on ``N`` clean
pairs (each opening with its own continuation) to restore utility. Loss is on the continuations only.
Strengths are ``--samples`` (N per phase; the paper uses fewer than 1,000). Each strength is one run
from the fingerprinted model.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated

import torch
from pydantic import Field

from omlkit.config import OMIT_DEFAULT_FROM_ID
from omlkit.evaluation.attacks.base import ATTACKS, Attack, save_model
from omlkit.evaluation.attacks.training import (
    Pair,
    TrainingDataOptions,
    attacker_texts,
    pair_batches,
    train_steps,
)

DEFAULT_LR = 1e-4


class MEraserOptions(TrainingDataOptions):
    """How many pairs each phase trains on."""

    samples: list[Annotated[int, Field(ge=1)]] = Field(
        default=[], description="Strengths of meraser: pairs per phase (mismatched, then clean).",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )


def opening_pairs(tokenizer, texts: Sequence[str], seq_len: int) -> list[Pair]:
    """``(opening ids, continuation ids)`` of each text: the opening is at most half of ``seq_len``
    (and half the text), the continuation the next up to half of ``seq_len`` tokens."""
    half = seq_len // 2
    pairs = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        if len(ids) >= 4:
            cut = min(half, len(ids) // 2)
            pairs.append((ids[:cut], ids[cut : cut + half]))
    return pairs


def mismatched(pairs: Sequence[Pair]) -> list[Pair]:
    """Each opening followed by the next pair's continuation (the last by the first's)."""
    return [(p[0], pairs[(i + 1) % len(pairs)][1]) for i, p in enumerate(pairs)]


@ATTACKS.register("meraser")
class MEraserAttack(Attack):
    """Mismatched-then-clean fine-tuning on ``N`` pairs per phase, for each N in ``--samples``."""

    options_cls = MEraserOptions
    strength_field = "samples"
    default_strengths = (100.0, 300.0, 1000.0)

    def apply(self, model_path: str, strength: float, out_dir: Path) -> Path:
        """Run both phases with ``strength`` pairs each and save the model into ``out_dir``."""
        from omlkit.models.loading import load_model
        from omlkit.models.logits import pad_id

        torch.manual_seed(self.config.seed)
        model, tok = load_model(model_path, device=self.config.device, dtype="fp32")
        opts = self.options
        clean = self.draw(opening_pairs(tok, attacker_texts(opts.data), opts.seq_len), int(strength))
        steps = 2 * math.ceil(len(clean) / opts.train_batch_size)

        def phases() -> Iterator[dict[str, torch.Tensor]]:
            yield from pair_batches(mismatched(clean), opts.train_batch_size, pad_id(tok))
            yield from pair_batches(clean, opts.train_batch_size, pad_id(tok))

        params = [p for p in model.parameters() if p.requires_grad]
        train_steps(model, phases(), params, opts.lr or DEFAULT_LR, [steps], lambda _: None,
                    bf16=opts.train_precision == "bf16")
        return save_model(model, tok, out_dir)

    def draw(self, pairs: list[Pair], n: int) -> list[Pair]:
        """``n`` pairs in a seeded order (the list repeated when it is shorter)."""
        rng = random.Random(self.config.seed)
        order = list(range(len(pairs)))
        rng.shuffle(order)
        return [pairs[order[i % len(order)]] for i in range(n)]
