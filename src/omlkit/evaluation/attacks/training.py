"""Shared by the fine-tuning attacks: the attacker's benign text, packed into blocks, and the SFT loop.

The attacker picks the text: ``--data`` (a text file or folder) or the embedded corpus's train split.
Texts are tokenized, joined with EOS and cut into ``seq_len`` blocks; blocks are drawn in a seeded order.
The loop is plain causal-LM training (AdamW), with a callback at each requested step count so one run
yields every strength.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import Field

from omlkit.config import OMIT_DEFAULT_FROM_ID
from omlkit.errors import CorpusError
from omlkit.evaluation.attacks.base import Attack
from omlkit.options import Options


class TrainingDataOptions(Options):
    """What every training attack (``finetune``, ``lora``, ``meraser``) trains on, and how."""

    data: Path | None = Field(
        None, description="Benign text file/folder of the training attacks (default: corpus train)."
    )
    lr: float | None = Field(
        None, gt=0, description="Learning rate of the training attacks (default per attack)."
    )
    train_batch_size: int = Field(8, ge=1, description="Sequences per training-attack step.")
    seq_len: int = Field(128, ge=8, description="Tokens per training-attack sequence.")
    train_precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="Training attacks' precision (bf16: autocast, fast on CPUs with native bf16).",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )


Pair = tuple[list[int], list[int]]


class TrainingOptions(TrainingDataOptions):
    """Options of the fine-tuning attacks (``finetune``, ``lora``): how long and on what the host trains."""

    steps: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list, description="Strengths of finetune/lora: optimizer steps."
    )


def attacker_texts(data: Path | None) -> list[str]:
    """Benign paragraphs from ``data`` (file or folder), else the default corpus's train split."""
    from omlkit.models.corpus import build_paragraphs, corpus_split, file_texts

    if data is None:
        return corpus_split("train")
    texts = build_paragraphs(file_texts(data))
    if not texts:
        raise CorpusError(f"--data {data}: no usable English paragraphs found")
    return texts


def packed_blocks(tokenizer, texts: Sequence[str], seq_len: int) -> torch.Tensor:
    """``[n_blocks, seq_len]`` token ids of the texts joined by EOS; refuses text shorter than one block."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=True)["input_ids"])
        if eos is not None:
            stream.append(eos)
    n = len(stream) // seq_len
    if n < 1:
        raise CorpusError(f"attack text has {len(stream)} tokens, fewer than one block of {seq_len}")
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)


def block_batches(blocks: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """An endless stream of batches of blocks, reshuffled (seeded) every pass."""
    rng = random.Random(seed)
    order = list(range(len(blocks)))
    size = min(batch_size, len(order))
    while True:
        rng.shuffle(order)
        for s in range(0, len(order) - size + 1, size):
            yield blocks[order[s : s + size]]


def pair_batches(pairs: Sequence[Pair], batch_size: int, pad: int) -> Iterator[dict[str, torch.Tensor]]:
    """Right-padded batches of ``opening + continuation``, labels on the continuation only."""
    for s in range(0, len(pairs), batch_size):
        rows = pairs[s : s + batch_size]
        width = max(len(a) + len(b) for a, b in rows)
        ids = torch.full((len(rows), width), pad)
        labels = torch.full((len(rows), width), -100)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (a, b) in enumerate(rows):
            n = len(a) + len(b)
            ids[r, :n] = torch.tensor(a + b)
            labels[r, len(a) : n] = torch.tensor(b)
            mask[r, :n] = 1
        yield {"input_ids": ids, "attention_mask": mask, "labels": labels}


def train_steps(
    model: torch.nn.Module,
    batches: Iterator[torch.Tensor | dict[str, torch.Tensor]],
    params: Sequence[torch.nn.Parameter],
    lr: float,
    checkpoints: Sequence[int],
    on_checkpoint: Callable[[int], None],
    bf16: bool = False,
) -> list[float]:
    """Causal-LM AdamW training up to ``max(checkpoints)`` steps; ``on_checkpoint(step)`` at each one.

    A batch is a tensor of token ids (every token trained) or the model's keyword arguments (``input_ids``,
    ``attention_mask``, ``labels`` with -100 where nothing is trained).

    Step 0 (if requested) is reported before any training; ``bf16`` runs the forward pass under bf16
    autocast (weights and optimizer stay fp32). Returns the loss of every step.
    """
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    targets = sorted(set(int(c) for c in checkpoints))
    losses: list[float] = []
    if targets and targets[0] == 0:
        on_checkpoint(0)
    model.train()
    for step in range(1, (targets[-1] if targets else 0) + 1):
        batch = next(batches)
        inputs = batch if isinstance(batch, dict) else {"input_ids": batch, "labels": batch}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**{k: v.to(device) for k, v in inputs.items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if step in targets:
            model.eval()
            on_checkpoint(step)
            model.train()
    model.eval()
    return losses


class SteppedTrainingAttack(Attack):
    """An attack whose strength is a number of training steps. One training run serves every strength:
    :meth:`train` saves a snapshot when it reaches each requested step count."""

    options_cls = TrainingOptions
    strength_field = "steps"
    default_strengths = (10.0, 50.0, 200.0)

    def apply(self, model_path: str, strength: float, out_dir: Path) -> Path:
        """Train for ``strength`` steps and save into ``out_dir``."""
        return self.train(model_path, {strength: out_dir})[strength]

    def apply_all(
        self, model_path: str, strengths: Sequence[float], out_root: Path
    ) -> Iterator[tuple[float, Path]]:
        """Train once to the largest step count, saving a snapshot at each requested count."""
        saved = self.train(model_path, {s: out_root / self.folder_name(s) for s in strengths})
        for s in strengths:
            yield s, saved[s]

    def train(self, model_path: str, targets: dict[float, Path]) -> dict[float, Path]:
        """Train, saving the model into ``targets[s]`` on reaching strength s (whole steps, unless the
        attack counts in other units); returns the saved folders by strength."""
        raise NotImplementedError
