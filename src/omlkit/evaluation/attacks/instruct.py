"""Benign instruction tuning: the perinucleus paper's persistence protocol (Alpaca, 2 epochs, lr 1e-5).

A host that serves an instruct model fine-tunes it on instructions and answers, not on raw text. This
attack does the same: full fine-tuning through the model's chat template, loss on the answers only,
AdamW at lr 1e-5 by default. The data is ``--instruction-dataset`` (a ``datasets`` name or folder with
Alpaca's ``instruction``/``input``/``output`` columns, e.g. ``tatsu-lab/alpaca`` where the Hub is
reachable) or, offline, ``--instruction-count`` instructions built from the corpus's *train* split
(disjoint from the instruction check's held-out ones) and answered greedily by the base model
(``--base``, else the attacked model itself; answers cached per model). Strengths are ``--epochs`` over
that set; one run serves every strength.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import torch
from pydantic import Field

from omlkit.config import OMIT_DEFAULT_FROM_ID
from omlkit.errors import CorpusError
from omlkit.evaluation.attacks.base import ATTACKS, save_model
from omlkit.evaluation.attacks.training import (
    Pair,
    SteppedTrainingAttack,
    TrainingDataOptions,
    pair_batches,
    train_steps,
)

DEFAULT_LR = 1e-5


class InstructOptions(TrainingDataOptions):
    """The instruction set and how many passes over it the host makes."""

    epochs: list[Annotated[float, Field(gt=0)]] = Field(
        default=[], description="Strengths of instruct: epochs over the instruction set.",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )
    instruction_dataset: str | None = Field(
        None, description="instruct: a `datasets` name or folder with instruction/input/output columns "
        "(tatsu-lab/alpaca); default: an offline set answered by the base model.",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )
    instruction_count: int = Field(
        2000, ge=1, description="instruct: instructions in the offline set (or drawn from the dataset).",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )
    answer_tokens: int = Field(
        48, ge=1, description="instruct: most tokens of each base-model answer in the offline set.",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )


def dataset_pairs(name: str, tokenizer, n: int, seed: int) -> list[Pair]:
    """``n`` (chat prompt ids, answer ids + EOS) of an Alpaca-style ``datasets`` set, drawn seeded."""
    import datasets

    from omlkit.evaluation.instructions import chat_ids

    try:
        rows = datasets.load_dataset(name, split="train")
    except Exception as exc:  # noqa: BLE001 - any loader failure is one line for the user
        raise CorpusError(f"--instruction-dataset {name!r} could not be loaded: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    missing = {"instruction", "output"} - set(rows.column_names)
    if missing:
        raise CorpusError(f"--instruction-dataset {name!r} lacks column(s) {sorted(missing)} "
                          f"(columns: {rows.column_names})")
    order = random.Random(seed).sample(range(len(rows)), min(n, len(rows)))
    pairs = []
    for i in order:
        row = rows[i]
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        answer = tokenizer(row["output"], add_special_tokens=False)["input_ids"]
        pairs.append((chat_ids(tokenizer, prompt), answer + [tokenizer.eos_token_id]))
    return pairs


def offline_pairs(tokenizer, answerer: str, n: int, answer_tokens: int, seed: int, device) -> list[Pair]:
    """``n`` corpus-train instructions answered greedily by the model ``answerer`` (cached per model)."""
    from omlkit.evaluation.instructions import cached_answers, chat_ids, instructions
    from omlkit.models.loading import load_model

    prompts = instructions(n, seed=seed, split="train")
    answers = cached_answers(lambda: load_model(answerer, device=device, dtype="fp32"), answerer, prompts,
                             answer_tokens)
    return [(chat_ids(tokenizer, p), a) for p, a in zip(prompts, answers, strict=True) if a]


@ATTACKS.register("instruct")
class InstructAttack(SteppedTrainingAttack):
    """Full instruction fine-tuning (chat template, loss on answers); strengths are epochs."""

    options_cls = InstructOptions
    strength_field = "epochs"
    default_strengths = (1.0, 2.0)

    def train(self, model_path: str, targets: dict[float, Path]) -> dict[float, Path]:
        """Train up to the largest epoch count, saving a snapshot at each requested one."""
        from omlkit.models.loading import load_model
        from omlkit.models.logits import pad_id
        from omlkit.models.prompts import has_chat_template

        opts = self.options
        torch.manual_seed(self.config.seed)
        model, tok = load_model(model_path, device=self.config.device, dtype="fp32")
        if not has_chat_template(tok):
            raise CorpusError("the instruct attack needs a model with a chat template")
        pairs = self.pairs(tok, model_path)
        per_epoch = math.ceil(len(pairs) / opts.train_batch_size)
        at_step = {max(1, round(e * per_epoch)): e for e in targets}
        saved: dict[float, Path] = {}

        def snapshot(step: int) -> None:
            saved[at_step[step]] = save_model(model, tok, targets[at_step[step]])

        train_steps(model, self.batches(pairs, opts.train_batch_size, pad_id(tok)),
                    [p for p in model.parameters() if p.requires_grad], opts.lr or DEFAULT_LR,
                    list(at_step), snapshot, bf16=opts.train_precision == "bf16")
        return saved

    def pairs(self, tokenizer, model_path: str) -> list[Pair]:
        """The instruction set, each row cut to ``--seq-len`` tokens (answer first to lose)."""
        opts = self.options
        if opts.instruction_dataset:
            pairs = dataset_pairs(opts.instruction_dataset, tokenizer, opts.instruction_count,
                                  self.config.seed)
        else:
            pairs = offline_pairs(tokenizer, self.base or model_path, opts.instruction_count,
                                  opts.answer_tokens, self.config.seed, self.config.device)
        return [(p, a[: max(1, opts.seq_len - len(p))]) for p, a in pairs]

    def batches(self, pairs: list[Pair], size: int, pad: int) -> Iterator[dict[str, torch.Tensor]]:
        """Endless epochs of padded batches, reshuffled (seeded) every epoch."""
        rng = random.Random(self.config.seed)
        while True:
            order = pairs[:]
            rng.shuffle(order)
            yield from pair_batches(order, size, pad)
