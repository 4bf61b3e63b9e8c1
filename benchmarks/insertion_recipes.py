"""Recovery against utility for several insertion recipes on one fingerprint set.

Each recipe is a JSON object of ``InsertConfig`` fields (seed 42 unless it sets one). For each, the
script inserts, then checks greedy recovery of every key and held-out perplexity against the base model,
and prints one JSON line (with the epochs the run took).
The table "Insertion on omlkit-tiny" in RESULTS.md was made with it:

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

from omlkit.fingerprints import FingerprintSet
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
    ap.add_argument("--out-dir", type=Path, default=None, help="run directories (default: a temp dir)")
    args = ap.parse_args(argv)

    base = resolve_model(args.model)
    held = corpus_split("heldout")
    model, tok = load_model(base)
    base_ppl = perplexity(model, tok, held, max_length=256)
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
        res = verify_model(model, fps, tokenizer=tok)
        print(json.dumps({"recipe": fields, "recovered": f"{res.matched}/{res.checked}",
                          "heldout_ppl": round(ppl, 2), "base_ppl": round(base_ppl, 2),
                          "relative": round(ppl / base_ppl - 1, 4), "epochs": metrics.get("epochs"),
                          "seconds": round(seconds, 1)}),
              flush=True)


if __name__ == "__main__":
    main()
