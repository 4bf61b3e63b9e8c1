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
