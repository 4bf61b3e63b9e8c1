"""The end of a run: gather the trained model (also when sharded), finalize it, save it atomically."""

from __future__ import annotations

import shutil

from omlkit.insertion.run_dir import RunDir, save_model_atomic, write_metrics


def final_model(trainer, regularizers, model_path: str):
    """The model to save, on the main process (None elsewhere): unwrapped, regularizers finalized
    (LoRA merged, added parameters folded in), in eval mode.

    Under DeepSpeed or FSDP the full state dict is gathered (a collective every process joins) and
    loaded into a fresh CPU copy of the prepared base model on the main process.
    """
    acc = trainer.accelerator
    if getattr(trainer, "is_deepspeed_enabled", False) or getattr(trainer, "is_fsdp_enabled", False):
        state = acc.get_state_dict(trainer.model_wrapped)
        if not acc.is_main_process:
            return None
        from omlkit.models.loading import load_model

        model, _ = load_model(model_path, device="cpu", dtype="fp32", tokenizer=False)
        for reg in regularizers:
            model = reg.prepare(model)
        model.load_state_dict(state, strict=False)
    else:
        if not acc.is_main_process:
            return None
        model = acc.unwrap_model(trainer.model)
    for reg in reversed(regularizers):
        model = reg.finalize(model)
    return model.eval()


def save_run(run: RunDir, model, tokenizer, metrics: dict) -> None:
    """Save ``model/`` atomically, then ``metrics.json`` (the finished marker), then drop checkpoints."""

    def save(tmp) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    save_model_atomic(run, save)
    write_metrics(run, metrics)
    shutil.rmtree(run.checkpoints, ignore_errors=True)
