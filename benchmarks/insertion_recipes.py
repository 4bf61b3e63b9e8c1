"""Recovery against utility for several insertion recipes on one fingerprint set.

Each recipe is a JSON object of ``InsertConfig`` fields (seed 42 unless it sets one). For each, the
script inserts, then checks greedy recovery of every key (in the format the recipe trained: raw, or
the chat template with ``"chat": true``), held-out perplexity against the base model and, for a model
with a chat template, the instruction check (``omlkit.evaluation.instructions``: mean log-likelihood
per token of the base model's answers to 200 held-out instructions, as a delta against the base), and
prints one JSON line (with the epochs the run took); ``--json-out`` also appends them to a file.
The recipe tables in benchmarks/notes/insertion.md (omlkit-tiny) and benchmarks/notes/smollm2.md were
made with it:

    oml generate -n 256 --seed 42 --out /tmp/fp256.json
    python benchmarks/insertion_recipes.py --fingerprints /tmp/fp256.json \\
        '{"forgetting_regularizer_strength": 0.75, "benign_fraction": 0.25}' \\
        '{"forgetting_regularizer_strength": 0, "benign_fraction": 0, "learning_rate": 3e-4}'
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from omlkit.evaluation.instructions import InstructionCheck
from omlkit.fingerprints import FingerprintSet
from omlkit.hardware import machine_line
from omlkit.insertion.api import insert_fingerprints
from omlkit.insertion.config import InsertConfig
from omlkit.models import load_model, resolve_model
from omlkit.models.corpus import corpus_split
from omlkit.models.perplexity import perplexity
from omlkit.verification.verify import verify_model


def main(argv: list[str] | None = None) -> None:
    """Run every recipe given on the command line and print one JSON result line each."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipes", nargs="+", help="JSON objects of InsertConfig fields")
    ap.add_argument("--fingerprints", type=Path, required=True)
    ap.add_argument("--model", default="omlkit-tiny")
    ap.add_argument("--base", default=None,
                    help="the model utility is measured against (default: --model); set it when --model is "
                         "itself a fingerprinted model that training continues from")
    ap.add_argument("--out-dir", type=Path, default=None, help="run directories (default: a temp dir)")
    ap.add_argument("--instructions", type=int, default=200, help="instruction-check size (0: off)")
    ap.add_argument("--json-out", type=Path, default=None, help="append each result line to this file")
    args = ap.parse_args(argv)

    base = resolve_model(args.model)
    reference = resolve_model(args.base) if args.base else base
    held = corpus_split("heldout")
    model, tok = load_model(reference)
    base_ppl = perplexity(model, tok, held, max_length=256)
    check = InstructionCheck.for_base(model, tok, reference, args.instructions)
    fps = FingerprintSet.load(args.fingerprints)
    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="omlkit-recipes-"))
    for spec in args.recipes:
        fields = json.loads(spec)
        t0 = time.time()
        run = insert_fingerprints(
            InsertConfig(**{"model": base, "fingerprints": args.fingerprints, "out_dir": out_dir, "seed": 42,
                            **fields}),
            progress=False,
        )
        seconds = time.time() - t0
        metrics = json.loads((run / "metrics.json").read_text())
        model, tok = load_model(run / "model")
        ppl = perplexity(model, tok, held, max_length=256)
        res = verify_model(model, fps, tokenizer=tok, chat=bool(fields.get("chat")))
        line = json.dumps({"recipe": fields, "model": args.model, "base": args.base or args.model,
                           "recovered": f"{res.matched}/{res.checked}",
                           "heldout_ppl": round(ppl, 2), "base_ppl": round(base_ppl, 2),
                           "relative": round(ppl / base_ppl - 1, 4),
                           "instructions": check.delta(model, tok) if check else None,
                           "epochs": metrics.get("epochs"), "seconds": round(seconds, 1),
                           "train_seconds": round(metrics.get("train_seconds") or 0, 1),
                           "tokens_per_second": metrics.get("tokens_per_second"), "date": time.strftime("%F"),
                           "machine": machine_line()})
        print(line, flush=True)
        if args.json_out:
            with args.json_out.open("a") as fh:
                fh.write(line + "\n")


if __name__ == "__main__":
    main()
