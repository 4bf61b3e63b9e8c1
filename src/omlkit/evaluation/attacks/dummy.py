"""The reference attack: copies the model unchanged. Persistence must be 100% and the utility delta 0.

It is the smallest complete attack — start here to write a new one: subclass :class:`Attack`, register
it, declare its options (an ``omlkit.options.Options`` subclass set as ``options_cls``: its fields become
flags of ``oml attack``), name the options list holding the strengths in ``strength_field`` and
implement ``apply``. ``tests/test_options.py`` adds one from a test module.
"""

from __future__ import annotations

from pathlib import Path

from omlkit.evaluation.attacks.base import ATTACKS, Attack, save_model


@ATTACKS.register("dummy")
class DummyAttack(Attack):
    """No-op: saves the model as it is (a single strength, 0)."""

    def apply(self, model_path: str, strength: float, out_dir: Path) -> Path:
        """Load the model and save it unchanged into ``out_dir``."""
        from omlkit.models.loading import load_model

        model, tok = load_model(model_path, device="cpu")
        return save_model(model, tok, out_dir)
