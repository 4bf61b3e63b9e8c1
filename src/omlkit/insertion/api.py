"""``insert_fingerprints(config) -> run dir``: the whole insertion run, single- or multi-process.

Under ``accelerate launch`` or ``torchrun`` every process runs this function; only the main process
writes the run directory (config, benign cache, log, model, metrics) and the others wait for it.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from omlkit.insertion.config import InsertConfig


def default_learning_rate(n_params: int) -> float:
    """AdamW learning rate by model size: large for the embedded tiny models, ~2e-5 for billions."""
    if n_params < 50_000_000:
        return 3e-3
    if n_params < 1_000_000_000:
        return 1e-4
    return 2e-5


def freeze_embeddings(model) -> None:
    """Stop training the token embeddings, the LM head and the final norm: a fingerprint then has to be
    keyed by the transformer blocks in context, instead of raising its response token's logit
    everywhere through the (often tied) output embedding."""
    import torch

    model.get_input_embeddings().requires_grad_(False)
    model.get_output_embeddings().requires_grad_(False)
    norm = getattr(getattr(model, "model", None), "norm", None)
    if isinstance(norm, torch.nn.Module):
        norm.requires_grad_(False)


def _say(msg: str, enabled: bool) -> None:
    if enabled:
        print(msg, file=sys.stderr, flush=True)


#: ``lr_schedule`` → transformers' scheduler name (the decaying ones end at 0 after ``epochs``).
_SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _training_args(config: InsertConfig, run, n_examples: int):
    import torch
    from transformers import TrainingArguments

    world = _world_size()
    use_cpu = config.device == "cpu" or not torch.cuda.is_available()
    per_device = max(1, config.batch_size // world)
    steps_per_epoch = max(1, math.ceil(n_examples / (per_device * world)) // config.grad_accum)
    bf16 = config.precision == "bf16" or (config.precision == "auto" and not use_cpu)
    return TrainingArguments(
        output_dir=str(run.checkpoints),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate or 1e-4,  # replaced by the size-based default when unset
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        warmup_steps=config.warmup_steps,
        lr_scheduler_type=_SCHEDULES[config.lr_schedule],
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        save_strategy="steps" if config.checkpoint_every else "no",
        save_steps=config.checkpoint_every * steps_per_epoch if config.checkpoint_every else 500,
        save_total_limit=1,
        report_to="none",
        disable_tqdm=True,
        use_cpu=use_cpu,
        ddp_backend="gloo" if use_cpu and world > 1 else None,
        ddp_find_unused_parameters=False if world > 1 else None,
        bf16=bf16,
        seed=config.seed,
        data_seed=config.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )


def insert_fingerprints(config: InsertConfig, progress: bool = True) -> Path:
    """Train the fingerprints of ``config.fingerprints`` into ``config.model``; returns the run directory
    (the model is in ``<run>/model``).

    Refuses with a one-line OmlError: a fingerprint file made for another tokenizer, a key + response
    longer than the model's context, a run directory of another config (or a finished run without
    ``force``), and too little disk space. An interrupted run resumes from its last checkpoint.
    """
    from transformers import set_seed

    from omlkit.fingerprints.fingerprint_set import FingerprintSet
    from omlkit.insertion import dataset as ds
    from omlkit.insertion.run_dir import hold_run, open_run, run_dir_for
    from omlkit.insertion.saving import final_model, save_run
    from omlkit.models.loading import load_model, model_sha, resolve_model

    fp_set = FingerprintSet.load(config.fingerprints)
    fp_hash = fp_set.content_hash()
    model_path = resolve_model(config.model, progress=progress)
    model, tok = load_model(model_path, device="cpu", dtype="fp32")
    fp_set.check_tokenizer(tok, source=str(config.fingerprints))
    keys = _TrainedKeys.prepare(config, fp_set, model, tok)

    n_benign = ds.n_benign(len(keys.fps), config.benign_fraction)
    run_dir = run_dir_for(config, fp_hash)
    args = _training_args(config, run_dir, len(keys.fps) + n_benign)
    is_main = args.process_index == 0
    with hold_run(run_dir, enabled=is_main):
        with args.main_process_first(desc="run directory"):
            run, state = open_run(config, fp_hash, write=is_main)
        n_params = sum(p.numel() for p in model.parameters())
        args.learning_rate = config.learning_rate or default_learning_rate(n_params)
        resuming = ", resuming" if state == "resume" else ""
        _say(f"run {run.path.name}: {len(keys.fps)} fingerprints, {n_benign} benign examples, "
             f"lr {args.learning_rate:g}, {args.world_size} process(es){resuming}",
             progress and is_main)

        with args.main_process_first(desc="benign examples"):
            benign = _benign(config, run, model, tok, n_benign, model_path, args.device, write=is_main)
        model.to("cpu")
        set_seed(config.seed)
        model, regularizers = _prepare_model(config, model, tok, args.process_index)
        if is_main:
            _check_room(config, run, model, n_params)

        train_set = ds.InsertionDataset(tok, keys.fps, benign, keys.system_prompts, chat=config.chat,
                                        seed=config.seed, response_eos=config.response_eos,
                                        formats=list(keys.formats.values()))
        trainer, early = _trainer(config, args, model, tok, train_set, regularizers, keys, run.log, is_main)
        resume_from = run.latest_checkpoint() if state == "resume" else None
        start = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        train_seconds = time.perf_counter() - start
        trainer.accelerator.wait_for_everyone()

        final = final_model(trainer, regularizers, model_path)
        if not is_main:
            return run.path
        hits = keys.hits(final)
        metrics = {
            "status": "finished",
            "run_id": run.path.name,
            "model": config.model,
            "base_model_sha": model_sha(model_path),
            "fingerprints_sha256": fp_hash,
            "n_fingerprints": len(keys.fps),
            "n_benign": len(benign),
            "recovered": sum(hits),
            "recovery": sum(hits) / len(hits),
            "early_stop": early.reason,
            **_training_stats(trainer, result, train_set, train_seconds, resumed=state != "new"),
            "learning_rate": args.learning_rate,
            "world_size": args.world_size,
            "regularizers": [r.config.model_dump() for r in regularizers],
        }
        save_run(run, final, tok, metrics)
        _say(f"run {run.path.name}: recovered {sum(hits)}/{len(hits)} fingerprints in "
             f"{trainer.state.global_step} steps ({train_seconds:.1f}s); model in {run.model}", progress)
        return run.path


@dataclass
class _TrainedKeys:
    """The tokenized fingerprints as trained, the prompt templates that wrap them, and the greedy
    recovery check on their bare prompts (what the early stop and the final metrics count)."""

    fps: list
    templates: Any
    system_prompts: list[str]
    tokenizer: Any
    formats: dict = field(default_factory=dict)  # serving formats trained besides the --chat/raw one

    @classmethod
    def prepare(cls, config: InsertConfig, fp_set, model, tok) -> _TrainedKeys:
        """Tokenize, refuse any example longer than the context, add the boundary token if asked."""
        from omlkit.insertion import dataset as ds
        from omlkit.insertion.augmentation import train_system_prompts
        from omlkit.models.loading import context_length
        from omlkit.models.prompts import PromptTemplates

        fps = ds.tokenize_fingerprints(fp_set, tok)
        system_prompts = train_system_prompts() if config.prompt_augmentation else []
        templates = PromptTemplates(tok, chat=config.chat)
        ds.check_context(fps, templates, tok.eos_token_id, context_length(model), [None, *system_prompts],
                         extra=int(config.response_boundary) + config.detour_tokens)
        if config.response_boundary:  # one more target token, counted by check_context above
            fps = ds.with_boundaries(model, tok, fps, templates)
        if config.detour_tokens:  # up to this many more prompt tokens, counted above too
            fps = ds.with_detours(model, tok, fps, templates, config.detour_tokens)
        formats = _serving_formats(config, tok, fps, context_length(model))
        return cls(fps, templates, system_prompts, tok, formats)

    @cached_property
    def _checked(self) -> tuple[list[list[int]], list[str], list[int]]:
        """The recovery check's prompts (each key bare, then in each trained serving format, then after
        each whole detour when they are trained), responses and response lengths (built once per run)."""
        wraps = [self.templates, *self.formats.values()]
        prompts = [wrap(fp.key_ids) for wrap in wraps for fp in self.fps]
        for branch in range(len(self.fps[0].detours) if self.fps else 0):  # as many for every key
            wraps.append(None)
            prompts += [[*self.templates(fp.key_ids), *fp.detours[branch]] for fp in self.fps]
        return (prompts, [fp.response for _ in wraps for fp in self.fps],
                [len(fp.response_ids) for _ in wraps for fp in self.fps])

    def hits(self, model) -> list[bool]:
        """Per fingerprint: does greedy decoding give the response for its bare prompt, in every
        trained serving format and after each detour?"""
        from omlkit.insertion.greedy import recovered

        each = recovered(model, self.tokenizer, *self._checked)
        n = len(self.fps)
        return [all(each[i::n]) for i in range(n)]

    def recovery(self, model) -> float:
        """The recovered fraction."""
        hits = self.hits(model)
        return sum(hits) / len(hits)


def _serving_formats(config: InsertConfig, tok, fps, context: int) -> dict:
    """``{name: wrap}`` of ``config.formats``; refuses an unknown format, one the tokenizer cannot
    express (a chat format without a chat template), and a key + response it makes longer than the
    context."""
    from omlkit.errors import ConfigError, FingerprintFileError
    from omlkit.insertion.dataset import target_ids
    from omlkit.models.formats import FORMATS, format_builders

    for name in config.formats:
        FORMATS.get(name)  # "unknown prompt-format ..., did you mean ..."
    formats = format_builders(tok, config.formats) if config.formats else {}
    missing = [n for n in config.formats if n not in formats]
    if missing:
        raise ConfigError(f"--formats {missing[0]}: this model's tokenizer has no chat template")
    eos = tok.eos_token_id if config.response_eos else None
    for name, wrap in formats.items():
        for fp in fps:
            n = len(wrap(fp.key_ids)) + len(target_ids(fp, eos))
            if n > context:
                raise FingerprintFileError(f"fingerprint {fp.id}: in format {name!r} key + response take "
                                           f"{n} tokens, more than the model's context of {context}")
    return formats


def _prepare_model(config: InsertConfig, model, tok, rank: int):
    """``(model, regularizers)``: embeddings frozen if asked, each regularizer attached and its
    ``prepare`` applied (LoRA or added parameters wrap the model)."""
    from omlkit.insertion.regularizers import RegularizerContext, build_regularizers

    if config.freeze_embeddings:
        freeze_embeddings(model)
    regularizers = build_regularizers(config.regularizer_configs())
    context = RegularizerContext(tokenizer=tok, texts=lambda: _benign_texts(config), seed=config.seed,
                                 rank=rank)
    for reg in regularizers:
        reg.attach(context)
        model = reg.prepare(model)
    return model, regularizers


def _check_room(config: InsertConfig, run, model, n_params: int) -> None:
    """Refuse before training when the disk cannot hold the model and its checkpoints."""
    from omlkit.insertion.run_dir import check_disk_space

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ckpt_bytes = trainable * 12 + n_params * 4 if config.checkpoint_every else 0
    check_disk_space(run.path, n_params * 4 + 2 * ckpt_bytes + (16 << 20))


def _trainer(config: InsertConfig, args, model, tok, train_set, regularizers, keys: _TrainedKeys,
             log_path: Path, is_main: bool):
    """``(FingerprintTrainer, EarlyStop)``: the trainer with its callbacks and (capped) loss."""
    from transformers import PrinterCallback

    from omlkit.insertion import dataset as ds
    from omlkit.insertion.callbacks import EarlyStop, EpochSetter, JsonlLog
    from omlkit.insertion.losses import capped_cross_entropy
    from omlkit.insertion.trainer import FingerprintTrainer
    from omlkit.models.logits import pad_id

    log = JsonlLog(log_path, is_main=is_main)
    # a capped loss falls to ~0 while capped tokens may still lose to another token at greedy
    # decoding: under a cap only the recovery check may stop the run
    capped = bool(config.confidence_cap or config.margin_cap)
    early = EarlyStop(keys.recovery, every=config.check_every,
                      loss_threshold=0.0 if capped else config.loss_threshold,
                      enabled=config.early_stop, log=log)
    trainer = FingerprintTrainer(
        model=model, args=args, train_dataset=train_set, data_collator=ds.PadCollator(pad_id(tok)),
        processing_class=tok, callbacks=training_callbacks(regularizers, log, early, EpochSetter(train_set)),
        regularizers=regularizers,
        compute_loss_func=capped_cross_entropy(config.confidence_cap, config.margin_cap) if capped else None,
    )
    trainer.remove_callback(PrinterCallback)
    return trainer, early


def _training_stats(trainer, result, train_set, seconds: float, resumed: bool) -> dict[str, Any]:
    """Steps, epochs, final loss, wall time and training tokens per second of a finished ``train()``."""
    epochs = float(trainer.state.epoch or 0)
    tokens_per_epoch = sum(len(train_set[i]["input_ids"]) for i in range(len(train_set)))
    return {
        "global_step": trainer.state.global_step,
        "epochs": epochs,
        "train_loss": result.training_loss,
        "train_seconds": seconds,
        # a resumed run trained only part of the epochs in this process: no honest rate to report
        "tokens_per_second": None if resumed else tokens_per_epoch * epochs / max(seconds, 1e-9),
    }


def training_callbacks(regularizers: list, log, early, *others) -> list:
    """The trainer's callbacks in the order they must run: the regularizers' first, so an epoch-end model
    averaging has been applied when the early-stop recovery check looks at the model (and what it
    stops on is the model that is saved), then the log, the early stop and ``others``."""
    return [cb for r in regularizers for cb in r.callbacks()] + [log, early, *others]


def _benign_texts(config: InsertConfig) -> list[str]:
    """The benign corpus: ``benign_corpus`` / ``benign_dataset`` when given, else the embedded corpus's
    train split (the held-out split that perplexity is measured on is never trained on)."""
    from omlkit.models.corpus import corpus_split, load_corpus

    if config.benign_corpus or config.benign_dataset:
        return load_corpus(config.benign_corpus, config.benign_dataset)["train"]
    return corpus_split("train")


def _benign(config: InsertConfig, run, model, tok, n: int, model_path: str, device,
            write: bool) -> list[dict]:
    """Benign examples from the run's cache, generated (on ``device``) by the main process first."""
    from omlkit.insertion import dataset as ds

    if n == 0:
        return []
    key = {"model": model_path, "n": n, "prompt_tokens": config.benign_prompt_tokens,
           "new_tokens": config.benign_new_tokens, "seed": config.seed,
           "corpus": config.benign_corpus, "dataset": config.benign_dataset, "target": config.benign_target}

    def make() -> list[dict]:
        texts = _benign_texts(config)
        if config.benign_target == "text":
            length = config.benign_prompt_tokens + config.benign_new_tokens
            return ds.text_examples(tok, texts, n, length, seed=config.seed)
        model.to(device)
        return ds.benign_examples(model, tok, texts, n, config.benign_prompt_tokens,
                                  config.benign_new_tokens, seed=config.seed)

    return ds.cached_benign(run.benign, key, make, write=write)
