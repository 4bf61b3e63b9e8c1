"""Fine-tuning attack: full-parameter SFT on benign text the attacker picks, for N optimizer steps.

One training run serves every strength: the model is saved when it reaches each step count in
``--steps``, so ``steps-200`` continues from ``steps-50``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from omlkit.evaluation.attacks.base import ATTACKS, Attack, save_model
from omlkit.evaluation.attacks.training import attacker_texts, block_batches, packed_blocks, train_steps

DEFAULT_LR = 1e-4


@ATTACKS.register("finetune")
class FinetuneAttack(Attack):
    """Full SFT (AdamW) on ``--data`` or the corpus train split; strengths are step counts."""

    strength_field = "steps"
    default_strengths = (10.0, 50.0, 200.0)

    def apply(self, model_path: str, strength: float, out_dir: Path) -> Path:
        """Fine-tune for ``strength`` steps and save into ``out_dir``."""
        return self._train(model_path, {int(strength): out_dir})[int(strength)]

    def apply_all(
        self, model_path: str, strengths: Sequence[float], out_root: Path
    ) -> Iterator[tuple[float, Path]]:
        """Train once to the largest step count, saving a snapshot at each requested count."""
        saved = self._train(model_path, {int(s): out_root / self.folder_name(s) for s in strengths})
        for s in strengths:
            yield s, saved[int(s)]

    def _train(self, model_path: str, targets: dict[int, Path]) -> dict[int, Path]:
        import torch

        from omlkit.models.loading import load_model

        torch.manual_seed(self.config.seed)
        model, tok = load_model(model_path, device=self.config.device, dtype="fp32")
        blocks = packed_blocks(tok, attacker_texts(self.config.data), self.config.seq_len)
        batches = block_batches(blocks, self.config.train_batch_size, self.config.seed)
        saved: dict[int, Path] = {}

        def snapshot(step: int) -> None:
            saved[step] = save_model(model, tok, targets[step])

        train_steps(
            model,
            batches,
            [p for p in model.parameters() if p.requires_grad],
            self.config.lr or DEFAULT_LR,
            list(targets),
            snapshot,
        )
        return saved
