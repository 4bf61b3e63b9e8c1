"""Insertion with 2 processes (torchrun, gloo, CPU) recovers every fingerprint, as 1 process does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from _helpers import fp_file, insert_config, training_seed

pytestmark = pytest.mark.trains  # asserts training outcomes: run by `make test-sweep`


@pytest.mark.slow
def test_two_processes_recover_like_one(micro_model, tmp_path):
    from omlkit.insertion.api import insert_fingerprints
    from omlkit.models.loading import load_tokenizer

    fps = fp_file(tmp_path, load_tokenizer(micro_model), 16)
    flags = dict(learning_rate=3e-3, batch_size=16, forgetting_regularizer_strength=0.0, benign_fraction=0.25,
                 check_every=1, checkpoint_every=0, seed=training_seed())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "omlkit.cli", "insert", "--model", str(micro_model), "--fingerprints", str(fps),
           "--out-dir", str(tmp_path / "ddp"), "--recipe", "published"]
    for k, v in flags.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (ddp_run,) = [d for d in (tmp_path / "ddp").iterdir() if d.is_dir()]  # beside it: .<run-id>.lock
    ddp = json.loads((ddp_run / "metrics.json").read_text())
    assert ddp["world_size"] == 2
    single_run = insert_fingerprints(insert_config(micro_model, fps, tmp_path / "single", **flags),
                                     progress=False)
    single = json.loads((single_run / "metrics.json").read_text())
    assert single["world_size"] == 1
    assert ddp["recovery"] == single["recovery"] == 1.0
    assert ddp_run.name == single_run.name  # the process count is not part of what is trained


@pytest.mark.slow
def test_fsdp2_on_cpu_averages_the_shards_like_one_process(micro_model, tmp_path):
    """Two gloo processes under torch FSDP2, model averaging on each rank's shard, reach the weights one
    process reaches on the same data (compared after 5 steps), and both recover every fingerprint."""
    from safetensors.torch import load_file

    from omlkit.models.loading import load_tokenizer

    fps = fp_file(tmp_path, load_tokenizer(micro_model), 16)
    worker = [os.path.join(os.path.dirname(__file__), "_fsdp_worker.py"), str(micro_model), str(fps)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, launcher in (("fsdp", ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]),
                           ("single", [])):
        proc = subprocess.run([sys.executable, *launcher, *worker, str(tmp_path / name), "200"], env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    sharded, single = (json.loads((tmp_path / n / "hits.json").read_text()) for n in ("fsdp", "single"))
    assert sharded["sharded"] == "DTensor" and single["sharded"] == "Parameter"
    a, b = (load_file(tmp_path / n / "weights.safetensors") for n in ("fsdp", "single"))
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    base = load_file(micro_model / "model.safetensors")
    moved = max(float((b[k] - base[k]).abs().max()) for k in b if k in base)
    assert worst < 1e-3 * moved, (worst, moved)  # trained away from the base, and the same way
    assert sharded["hits"] == single["hits"] == [True] * 16
