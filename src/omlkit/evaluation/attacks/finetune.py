"""Fine-tuning attack: full-parameter SFT on benign text the attacker picks, for N optimizer steps.

One training run serves every strength: the model is saved when it reaches each step count in
``--steps``, so ``steps-200`` continues from ``steps-50``.
"""

from __future__ import annotations

from pathlib import Path

from omlkit.evaluation.attacks.base import ATTACKS, save_model
from omlkit.evaluation.attacks.training import (
    SteppedTrainingAttack,
    attacker_texts,
    block_batches,
    packed_blocks,
    train_steps,
)

DEFAULT_LR = 1e-4


@ATTACKS.register("finetune")
class FinetuneAttack(SteppedTrainingAttack):
    """Full SFT (AdamW) on ``--data`` or the corpus train split; strengths are step counts."""

    def train(self, model_path: str, targets: dict[float, Path]) -> dict[float, Path]:
        import torch

        from omlkit.models.loading import load_model

        torch.manual_seed(self.config.seed)
        model, tok = load_model(model_path, device=self.config.device, dtype="fp32")
        opts = self.options
        blocks = packed_blocks(tok, attacker_texts(opts.data), opts.seq_len)
        batches = block_batches(blocks, opts.train_batch_size, self.config.seed)
        saved: dict[float, Path] = {}

        def snapshot(step: int) -> None:
            saved[step] = save_model(model, tok, targets[step])

        train_steps(
            model,
            batches,
            [p for p in model.parameters() if p.requires_grad],
            opts.lr or DEFAULT_LR,
            list(targets),
            snapshot,
            bf16=opts.train_precision == "bf16",
        )
        return saved
