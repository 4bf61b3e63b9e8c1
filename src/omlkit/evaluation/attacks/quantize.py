"""Weight quantisation (int8 by default): every Linear weight rounded to ``bits`` bits and back.

Each output row of a Linear weight gets a symmetric scale ``max|w| / (2^(bits−1) − 1)``; weights are
rounded to integers in ``[−qmax, qmax]`` and multiplied back. The result is saved as a normal
Hugging Face model whose weights take at most ``2^bits − 1`` distinct values per row — exactly the
weight error of per-channel int8 storage.

Why a simulated round-trip rather than ``torch.ao.quantization.quantize_dynamic``: a dynamically
quantised model holds packed int8 parameters that ``save_pretrained``/``from_pretrained`` cannot write or
read back, it runs on CPU only, and it could not be served or verified by the same code as every other
model. The round-trip keeps the attacked model an ordinary folder that every backend loads. What it
leaves out is dynamic quantisation's per-token rounding of activations, which only adds noise on top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
from pydantic import Field

from omlkit.evaluation.attacks.base import ATTACKS, Attack, save_model
from omlkit.options import Options


class QuantizeOptions(Options):
    """The weight widths to try."""

    bits: list[Annotated[int, Field(ge=2, le=16)]] = Field(
        default_factory=list, description="Strengths of quantize: bits per weight (8 = int8)."
    )


def fake_quantize_(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Round a 2-D weight in place to ``bits``-bit per-row symmetric integers times a scale; returns it."""
    qmax = 2 ** (bits - 1) - 1
    with torch.no_grad():
        w = weight.float()
        scale = w.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / qmax
        weight.copy_((torch.round(w / scale).clamp(-qmax, qmax) * scale).to(weight.dtype))
    return weight


def quantize_linear_weights_(model: torch.nn.Module, bits: int) -> int:
    """Fake-quantise every ``nn.Linear`` weight of ``model`` in place; returns how many were quantised.

    A weight shared by two layers (tied embeddings) is quantised once.
    """
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            fake_quantize_(module.weight, bits)
    return len(seen)


@ATTACKS.register("quantize")
class QuantizeAttack(Attack):
    """Per-channel symmetric weight quantisation at each width in ``--bits`` (default int8)."""

    options_cls = QuantizeOptions
    strength_field = "bits"
    default_strengths = (8.0,)
    stronger = "lower"

    def apply(self, model_path: str, strength: float, out_dir: Path) -> Path:
        """Quantise the Linear weights to ``strength`` bits and save the (dequantised) model."""
        from omlkit.models.loading import load_model

        model, tok = load_model(model_path, device="cpu", dtype="fp32")
        quantize_linear_weights_(model, int(strength))
        return save_model(model, tok, out_dir)
