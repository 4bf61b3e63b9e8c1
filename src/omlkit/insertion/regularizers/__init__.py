"""Anti-forgetting regularizers, one file each; importing the package registers them all."""

from omlkit.insertion.regularizers import added_params, dummy, l2_to_base, lora, model_averaging  # noqa: F401
from omlkit.insertion.regularizers.base import REGULARIZERS, Regularizer, build_regularizers

__all__ = ["REGULARIZERS", "Regularizer", "build_regularizers"]
