"""``oml insert``: fine-tune fingerprints into a model (also under ``accelerate launch`` / ``torchrun``).

Multi-process: ``accelerate launch [--config_file omlkit/configs/accelerate/ddp.yaml] -m omlkit.cli
insert ...`` or ``torchrun --nproc_per_node=N -m omlkit.cli insert ...``.
"""

from __future__ import annotations

from omlkit.commands._app import app
from omlkit.config import config_command
from omlkit.insertion.config import InsertConfig


def run_insert(cfg: InsertConfig) -> None:
    """Run the insertion and print where the model is (main process only)."""
    import os

    from omlkit.insertion.api import insert_fingerprints

    run = insert_fingerprints(cfg)
    if os.environ.get("RANK", "0") == "0":
        print(run)


config_command(app, "insert", InsertConfig, run_insert,
               help="Fine-tune fingerprints into a model; writes runs/<run-id>/ with model/, config.json, "
                    "train_log.jsonl and metrics.json.")
