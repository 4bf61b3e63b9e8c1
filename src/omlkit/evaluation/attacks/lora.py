"""LoRA attack: fine-tune low-rank adapters (peft) on benign text, then merge them into the weights.

Adapters go on every Linear layer of the transformer blocks (``all-linear``: not the output layer);
alpha = 2·rank. Each requested step count is saved as a merged, ordinary model folder.
"""

from __future__ import annotations

import copy
from pathlib import Path

from pydantic import Field

from omlkit.evaluation.attacks.base import ATTACKS, save_model
from omlkit.evaluation.attacks.training import (
    SteppedTrainingAttack,
    TrainingOptions,
    attacker_texts,
    block_batches,
    packed_blocks,
    train_steps,
)

DEFAULT_LR = 1e-3


class LoraAttackOptions(TrainingOptions):
    """The fine-tuning attack's options and the adapters' rank."""

    lora_rank: int = Field(8, ge=1, description="LoRA rank.")


@ATTACKS.register("lora")
class LoraAttack(SteppedTrainingAttack):
    """peft LoRA of rank ``--lora-rank`` trained for each step count in ``--steps``, merged on save."""

    options_cls = LoraAttackOptions

    def train(self, model_path: str, targets: dict[float, Path]) -> dict[float, Path]:
        import torch
        from peft import LoraConfig, get_peft_model

        from omlkit.models.loading import load_model

        torch.manual_seed(self.config.seed)
        model, tok = load_model(model_path, device=self.config.device, dtype="fp32")
        opts = self.options
        rank = opts.lora_rank
        peft_model = get_peft_model(
            model,
            LoraConfig(
                r=rank,
                lora_alpha=2 * rank,
                lora_dropout=0.0,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            ),
        )
        blocks = packed_blocks(tok, attacker_texts(opts.data), opts.seq_len)
        batches = block_batches(blocks, opts.train_batch_size, self.config.seed)
        saved: dict[float, Path] = {}

        def snapshot(step: int) -> None:
            merged = copy.deepcopy(peft_model).merge_and_unload()
            saved[step] = save_model(merged, tok, targets[step])

        train_steps(
            peft_model,
            batches,
            [p for p in peft_model.parameters() if p.requires_grad],
            opts.lr or DEFAULT_LR,
            list(targets),
            snapshot,
            bf16=opts.train_precision == "bf16",
        )
        return saved
