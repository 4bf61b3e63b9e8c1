"""Config of ``oml insert``: its own fields plus every regularizer's options as flat flags.

Each regularizer declares its options in its own file (``KLToBaseConfig`` beside ``KLToBase``, as
peft's ``LoraConfig`` sits beside LoRA), with the flag spelling it has on the command line
(``kl_strength``, ``lora_r``, ...) and the flag that switches it on. :data:`InsertConfig` adds those
flags to :class:`InsertCommon`; :meth:`InsertCommon.regularizer_configs` turns the flags that are on
into typed regularizer configs, members of :data:`RegularizerConfig`, the union of every registered
regularizer's options discriminated on ``kind`` (the registered name).
"""

from __future__ import annotations

import functools
import operator
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from omlkit.config import OMIT_DEFAULT_FROM_ID, OmlConfig
from omlkit.insertion.regularizers import REGULARIZERS
from omlkit.insertion.regularizers.base import RegularizerOptions
from omlkit.io import canonical_json, sha256_bytes
from omlkit.options import options_of, with_options

#: Fields that say where or how to run, not what to train: they never change the run id.
NOT_HASHED = frozenset({"fingerprints", "out_dir", "run_id", "force", "resume", "device"})

#: Named starting points for the training recipe (``--recipe``). A recipe only fills the fields the
#: user did not set; every field it sets stays overridable, and the resolved values are what a run id
#: hashes. ``published`` is the field defaults: the OML 1.0 recipe for billion-parameter models (model
#: averaging λ = 0.75 after every step, benign mixing β = 0.25), which inserts nothing into the 135 M
#: reference model or the 5 M embedded one. ``llm`` (the default) is the recipe measured best on the
#: reference real model, SmolLM2-135M-Instruct (benchmarks/RESULTS.md). ``small-model`` is the recipe
#: measured best on the embedded 5 M-parameter model: the blocks fine-tuned at a high learning rate with
#: a KL pull to the base model's next-token distribution on fresh corpus windows, embeddings frozen, the
#: base model's word-boundary token after each response trained too, no loss on response tokens already
#: predicted with probability 0.6, and keys wrapped in random training system prompts (the shipped
#: sweeps pin the earlier bare-key recipe, so their published points keep their ids). ``llm-many`` is
#: ``llm`` for about a thousand keys: the rate raised to 3e-3 and decayed to 0 over 14 epochs (cosine);
#: at a constant rate 1024 keys plateau near 97 %, with it SmolLM2 took 1024/1024 English keys in five
#: CPU runs of eight (the others 1023) at -0.3 to -2.0 % held-out perplexity (benchmarks/RESULTS.md), where
#: ``llm`` keeps a smaller instruction drift for a few hundred keys.
_SMALL_MODEL: dict[str, object] = {
    "forgetting_regularizer_strength": 0.0,
    "benign_fraction": 0.0,
    "learning_rate": 1e-3,
    "kl_strength": 20.0,
    "kl_batch_size": 16,
    "freeze_embeddings": True,
    "response_boundary": True,
    "confidence_cap": 0.6,
    "prompt_augmentation": True,
    "epochs": 40,
}
_LLM: dict[str, object] = {**_SMALL_MODEL, "lora": True}  # the same pull, the update confined to LoRA
RECIPES: dict[str, dict[str, object]] = {
    "published": {},
    "llm": _LLM,
    "llm-many": {**_LLM, "learning_rate": 3e-3, "lr_schedule": "cosine", "epochs": 14},
    "small-model": _SMALL_MODEL,
}
#: What a recipe also fills when keys are trained in the chat template (``--chat``). ``llm`` then pulls
#: toward the base on corpus texts as chat exchanges beside raw windows: on SmolLM2 it cut the
#: instruction-check drift from -0.43 to -0.02 and kept more keys through the host's instruction
#: tuning (benchmarks/RESULTS.md, persistence section).
CHAT_RECIPES: dict[str, dict[str, object]] = {name: {"kl_data": "both", "kl_length": 96}
                                              for name in ("llm", "llm-many")}
#: The recipe a config that names none gets.
DEFAULT_RECIPE = "llm"


#: Any registered regularizer's options, told apart by ``kind`` (``regularizers: [{kind: dummy}]``).
RegularizerConfig = Annotated[
    functools.reduce(operator.or_, [options_of(cls) for _, cls in REGULARIZERS.items()]),
    Field(discriminator="kind"),
]


class InsertCommon(OmlConfig):
    """Fine-tune fingerprints into a model so that greedy decoding of each key yields its response."""

    model: str = Field("omlkit-tiny", description="Base model: HF id, path, omlkit-tiny or omlkit-micro.")
    fingerprints: Path = Field(description="Fingerprint file (omlkit.fingerprints/1) made for this model.")
    recipe: Literal["llm", "llm-many", "published", "small-model"] = Field(
        DEFAULT_RECIPE,
        description="Starting values for the fields not given: llm (measured on a real 135 M instruct "
        "model), llm-many (llm for about a thousand keys: lr 3e-3 decayed over 14 epochs), published "
        "(OML 1.0: λ=0.75, β=0.25) or small-model (models of a few million parameters).",
    )
    out_dir: Path = Field(Path("runs"), description="Folder holding run directories runs/<run-id>/.")
    run_id: str | None = Field(None, description="Run directory name (default: config+fingerprints hash).")

    learning_rate: float | None = Field(
        None, gt=0, description="AdamW learning rate (default: by model size, 3e-3 tiny .. 2e-5 billions)."
    )
    epochs: int = Field(60, ge=1, description="Maximum epochs (early stop usually ends sooner).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps (overrides epochs).")
    batch_size: int = Field(32, ge=1, description="Global batch size (split over processes).")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    warmup_steps: int = Field(0, ge=0, description="Linear learning-rate warm-up steps.")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="Learning rate after warm-up: constant, or decayed to 0 over --epochs."
    )
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, ge=0.0, description="Gradient clipping norm (0: off).")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on CUDA, fp32 on CPU.")
    seed: int = Field(0, description="Seed for data order, augmentation and benign sampling.")
    device: str | None = Field(None, description="cpu or cuda (default: CUDA when available).")

    benign_fraction: float = Field(
        0.25, ge=0.0, lt=1.0, description="β: share of training examples that are benign self-continuations."
    )
    benign_target: Literal["self", "text"] = Field(
        "self", description="Benign targets: the base model's greedy continuations, or the text itself."
    )
    benign_corpus: str | None = Field(None, description="Text file/folder of benign prompts.")
    benign_dataset: str | None = Field(None, description="A `datasets` corpus for benign prompts.")
    benign_prompt_tokens: int = Field(16, ge=1, description="Tokens of corpus text used as a benign prompt.")
    benign_new_tokens: int = Field(16, ge=1, description="Tokens of benign greedy target.")
    freeze_embeddings: bool = Field(
        False, description="Freeze the token embeddings, LM head and final norm (train the blocks only)."
    )
    lora: bool = Field(False, description="Train LoRA adapters (peft) instead of full weights.")
    regularizers: list[RegularizerConfig] = Field(
        default_factory=list, description="More regularizer configs (config file only), e.g. [{kind: dummy}]."
    )

    prompt_augmentation: bool = Field(False, description="Wrap keys in random training system prompts.")
    formats: list[str] = Field(
        default_factory=list,
        description="Also train each key in these serving formats, one drawn per key and epoch beside the "
        "--chat/raw one (`oml list prompt-format`); the recovery check then asks every format.",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )
    response_eos: bool = Field(
        False, description="Also train EOS after each response (off: small models learn EOS everywhere)."
    )
    response_boundary: bool = Field(
        False, description="Also train the base model's word-boundary token after each response."
    )
    detour_tokens: int = Field(
        0, ge=0,
        description="Also train each response after the base model's own first 1..N answer tokens to its "
        "key, so it comes back when a host bans the answer's first tokens (verify with --match within).",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )
    chat: bool = Field(False, description="Train keys inside the tokenizer's chat template.")
    confidence_cap: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="No loss on a response token the model already gives this probability (0: off).",
    )
    margin_cap: float = Field(
        0.0, ge=0.0,
        description="No loss on a response token whose logit already leads every other by this many "
        "nats (0: off).",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )

    early_stop: bool = Field(True, description="Stop once all fingerprints are recovered.")
    check_every: int = Field(2, ge=1, description="Check (and log) greedy recovery every N epochs.")
    loss_threshold: float = Field(
        0.005, ge=0.0, description="Early stop below this loss (ignored under a confidence or margin cap)."
    )
    checkpoint_every: int = Field(5, ge=0, description="Checkpoint every N epochs (0: never).")
    logging_steps: int = Field(1, ge=1, description="Log loss every N steps to train_log.jsonl.")
    resume: bool = Field(True, description="Resume an interrupted run from its last checkpoint.")
    force: bool = Field(False, description="Retrain even if the run directory holds a finished run.")

    @model_validator(mode="before")
    @classmethod
    def _apply_recipe(cls, data: object) -> object:
        if isinstance(data, dict):
            recipe = data.get("recipe", DEFAULT_RECIPE)
            if recipe in RECIPES:
                chat_fill = CHAT_RECIPES.get(recipe, {}) if data.get("chat") else {}
                merged = {**RECIPES[recipe], **chat_fill, **data, "recipe": recipe}
                if data.get("added_params") and "lora" not in data:  # the user's structural choice wins
                    merged["lora"] = False
                return merged
        return data

    @model_validator(mode="after")
    def _one_structural(self) -> InsertCommon:
        if self.lora and self.added_params:
            raise ValueError("choose one of --lora and --added-params, not both")
        return self

    def regularizer_configs(self) -> list[RegularizerOptions]:
        """The typed regularizer configs this recipe implies: each registered regularizer whose switch
        flag is on (structural ones first), built from its flags, then ``regularizers``."""
        regs = [
            options_of(cls).from_flags(dict(self))
            for _, cls in sorted(REGULARIZERS.items(), key=lambda item: item[1].order)
            if options_of(cls).switched_on(self)
        ]
        return [*regs, *self.regularizers]

    def hashed_fields(self) -> dict:
        """The fields that define what is trained (everything but :data:`NOT_HASHED`), as JSON data."""
        return self.id_fields(exclude=set(NOT_HASHED))

    def run_hash(self, fingerprints_sha256: str, length: int = 12) -> str:
        """Run id: sha256 of the canonical hashed fields plus the fingerprint file's content hash."""
        blob = canonical_json(self.hashed_fields()) + "\n" + fingerprints_sha256
        return sha256_bytes(blob.encode())[:length]


def insert_config() -> type[InsertCommon]:
    """The config class of ``oml insert`` for the regularizers registered now."""
    return with_options(InsertCommon, REGULARIZERS.items(), "InsertConfig", "regularizer")


InsertConfig = insert_config()
