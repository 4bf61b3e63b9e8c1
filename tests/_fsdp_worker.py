"""Fingerprint insertion under torch FSDP2 on CPU: the worker of ``test_insertion_distributed``.

Under ``torchrun --nproc_per_node=2`` each rank holds a shard of every parameter (``fully_shard`` over a
gloo CPU mesh) and the model-averaging regularizer lerps those local shards toward theirs of θ₀ — the
``dtensor`` path of :mod:`omlkit.insertion.regularizers.model_averaging`. Run without ``torchrun`` the
same steps train one unsharded model, averaging the loss over the same two half-batches FSDP's
gradient reduction averages over. Both write the weights after the first ``COMPARED_STEPS`` steps
(``weights.safetensors``: after more, Adam's normalisation of near-zero gradients lets rounding
differences grow) and the greedy recovery of every key at the end (``hits.json``) into the output folder.

The loop is the textbook one on purpose: ``transformers.Trainer`` cannot shard on CPU, because
accelerate (1.16) turns FSDP on only for GPU-like process groups, so what is tested here is the part
omlkit owns — averaging on sharded parameters — on the engine that shards them (torch FSDP2).

    python tests/_fsdp_worker.py MODEL FINGERPRINTS OUT_DIR MAX_STEPS
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from omlkit.fingerprints.fingerprint_set import FingerprintSet
from omlkit.insertion import dataset as ds
from omlkit.insertion.api import _prepare_model, _TrainedKeys
from omlkit.insertion.config import InsertConfig
from omlkit.models.loading import load_model
from omlkit.models.logits import pad_id

HALVES = 2  # the batch is split in as many parts as the sharded run has processes
COMPARED_STEPS = 5
CHECK_EVERY = 10


def shard(model: torch.nn.Module) -> None:
    """FSDP2 over every process: one unit per decoder layer, the rest (embeddings, head) in the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


def full_weights(model: torch.nn.Module, sharded: bool) -> dict[str, torch.Tensor]:
    """Every parameter, whole, on CPU (a collective every rank joins when ``sharded``)."""
    if not sharded:
        return {n: p.detach().clone() for n, p in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def train(model, batches: list[dict], optimizer, averaging, steps: int, sharded: bool) -> None:
    """``steps`` AdamW steps on the whole set, each followed by one averaging update."""
    parts = [batches[dist.get_rank()]] if sharded else batches
    for _ in range(steps):
        loss = sum(model(**part).loss for part in parts) / len(parts)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        averaging.average(model)


def train_until_recovered(model, batches, optimizer, averaging, keys, max_steps: int, sharded: bool) -> int:
    """Train in rounds of ``CHECK_EVERY`` steps until greedy decoding recovers every key (checked on the
    model as it is, sharded or not, as insertion's early stop does); returns the steps taken."""
    steps = COMPARED_STEPS
    while steps < max_steps and not all(keys.hits(model)):
        train(model, batches, optimizer, averaging, CHECK_EVERY, sharded)
        steps += CHECK_EVERY
    return steps


def main(model_path: str, fingerprints: str, out_dir: str, max_steps: int) -> None:
    """Insert with averaging λ = 0.02, sharded when started by torchrun, and write weights and hits."""
    sharded = "WORLD_SIZE" in os.environ
    if sharded:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    config = InsertConfig(model=model_path, fingerprints=Path(fingerprints), recipe="published",
                          forgetting_regularizer_strength=0.02, benign_fraction=0.0, learning_rate=1e-2)
    model, tok = load_model(model_path, device="cpu", dtype="fp32")
    keys = _TrainedKeys.prepare(config, FingerprintSet.load(fingerprints), model, tok)
    model, regularizers = _prepare_model(config, model, tok, dist.get_rank() if sharded else 0)
    (averaging,) = [cb for reg in regularizers for cb in reg.callbacks()]
    if sharded:
        shard(model)
    examples = ds.InsertionDataset(tok, keys.fps)
    collate = ds.PadCollator(pad_id(tok))
    batches = [collate([examples[i] for i in range(h, len(examples), HALVES)]) for h in range(HALVES)]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    train(model, batches, optimizer, averaging, COMPARED_STEPS, sharded)
    compared = full_weights(model, sharded)
    steps = train_until_recovered(model, batches, optimizer, averaging, keys, max_steps, sharded)
    weights = full_weights(model, sharded)
    if not sharded or dist.get_rank() == 0:
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file({n: w.contiguous() for n, w in compared.items()}, out / "weights.safetensors")
        plain, _ = load_model(model_path, device="cpu", dtype="fp32")
        plain.load_state_dict(weights)
        (out / "hits.json").write_text(json.dumps({"hits": keys.hits(plain),
                                                   "sharded": type(next(model.parameters())).__name__,
                                                   "steps": steps}))
    if sharded:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
