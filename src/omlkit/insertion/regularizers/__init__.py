"""Anti-forgetting regularizers, one file each; importing the package registers them all."""

from omlkit.insertion.regularizers import (  # noqa: F401
    added_params,
    dummy,
    kl_to_base,
    l2_to_base,
    lora,
    model_averaging,
    persistence,
)
from omlkit.insertion.regularizers.base import (
    REGULARIZERS,
    Regularizer,
    RegularizerContext,
    TrainBatch,
    build_regularizers,
)

__all__ = ["REGULARIZERS", "Regularizer", "RegularizerContext", "TrainBatch", "build_regularizers"]
