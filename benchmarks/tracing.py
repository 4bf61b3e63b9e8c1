"""Tracing leaks to hosts: N copies made with ``oml distribute``, then coalitions of k hosts of each kind.

For each coalition kind (uniform weight merge, random routing, per-token majority) and k = 1..3, draws
``--trials`` random coalitions, traces each with ``oml trace``'s test, and reports: trials where a
colluder was named, innocent hosts accused (must be 0), and keys spent. Prints a Markdown table and
writes JSON. The results page row for omlkit-tiny:

    python benchmarks/tracing.py --model omlkit-tiny --pool 512 --hosts 8 --out-dir /tmp/tracing \\
        --json-out benchmarks/out/tracing.json

and for the micro model, with the tests' insertion settings:

    python benchmarks/tracing.py --model omlkit-micro --recipe published --insert '{"learning_rate":
        3e-3, "forgetting_regularizer_strength": 0, "benign_fraction": 0, "batch_size": 16}' ...
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from omlkit.fingerprints import FingerprintSet
from omlkit.hardware import machine_line
from omlkit.tracing.coalitions import COALITIONS, coalition_backend
from omlkit.tracing.config import DistributeConfig
from omlkit.tracing.distribute import distribute
from omlkit.tracing.manifest import Manifest
from omlkit.tracing.trace import ask_backend, trace


def main(argv: list[str] | None = None) -> None:
    """Distribute (or reuse a distribution), run the coalition trials, print and write the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="omlkit-tiny")
    ap.add_argument("--pool", type=int, default=512,
                    help="pool keys (512 names coalitions of 3; docs/tracing.md sizes it)")
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--rate", type=float, default=0.25)
    ap.add_argument("--core", type=int, default=0, help="fingerprints every copy holds (a shared checkpoint)")
    ap.add_argument("--independent", action="store_true",
                    help="also time N independent insertions (each copy's keys and the core, from the base)")
    ap.add_argument("--recipe", default="small-model")
    ap.add_argument("--insert", default="{}", help="JSON object of InsertConfig fields for every copy")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--alpha", type=float, default=1e-6)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)

    from omlkit.fingerprints.config import GenerateConfig
    from omlkit.fingerprints.generate import run_generate
    from omlkit.models.loading import load_model

    pool = args.out_dir / "pool.json"
    if not pool.exists():
        run_generate(GenerateConfig(n=args.pool, target_model=args.model, out=pool, progress=False))
    t0 = time.time()
    manifest_path = args.out_dir / "manifest.json"
    if not manifest_path.exists():
        distribute(_distribute_config(args, pool), say=print)
    made = time.time() - t0
    independent = _independent(args, pool) if args.independent else None
    fp_set, manifest = FingerprintSet.load(pool), Manifest.load(manifest_path)
    models = {h.host: load_model(h.model, device="cpu") for h in manifest.hosts}
    tok = next(iter(models.values()))[1]
    rows = []
    for kind in COALITIONS:
        for k in (1, 2, 3):
            rows.append(run_trials(kind, k, fp_set, manifest, models, tok, args))
            print(json.dumps(rows[-1]), flush=True)
    result = {"model": args.model, "pool": args.pool, "hosts": args.hosts, "rate": args.rate,
              "core": args.core, "distribute_seconds": round(made, 1), "independent_seconds": independent,
              "machine": machine_line(),
              "date": time.strftime("%Y-%m-%d"), "rows": rows}
    print(markdown(result))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")


def _distribute_config(args, pool: Path, out_dir: Path | None = None) -> DistributeConfig:
    return DistributeConfig(model=args.model, fingerprints=pool, hosts=args.hosts, rate=args.rate,
                            core=args.core, recipe=args.recipe, out_dir=out_dir or args.out_dir,
                            **json.loads(args.insert))


def _independent(args, pool: Path) -> float:
    """Seconds to insert every copy's fingerprints (core included) from the base, one run each: what
    ``oml distribute`` saves by inserting the core once."""
    from omlkit.insertion.api import insert_fingerprints
    from omlkit.insertion.config import InsertConfig
    from omlkit.tracing.distribute import DISTRIBUTE_ONLY

    cfg = _distribute_config(args, pool, args.out_dir / "independent")
    fields = cfg.model_dump(exclude=DISTRIBUTE_ONLY | {"model", "fingerprints", "out_dir", "run_id"})
    t0 = time.time()
    for subset in sorted((args.out_dir / "subsets").glob("host-*.json")):
        insert_fingerprints(InsertConfig(**fields, model=args.model, fingerprints=subset,
                                         out_dir=cfg.out_dir / "runs", run_id=subset.stem), progress=False)
    return round(time.time() - t0, 1)


def run_trials(kind: str, k: int, fp_set, manifest, models, tok, args) -> dict:
    """``args.trials`` random coalitions of ``k`` hosts of one kind, traced."""
    rng = random.Random(f"bench/{kind}/{k}")
    named = innocent = 0
    spent = []
    for trial in range(args.trials):
        members = rng.sample(sorted(models), k)
        backend = coalition_backend(kind, [models[h][0] for h in members], tok, seed=trial)
        res = trace(fp_set, manifest, ask_backend(fp_set, backend), alpha=args.alpha, chunk=args.chunk,
                    seed=trial)
        named += bool(set(res.accused) & set(members))
        innocent += len(set(res.accused) - set(members))
        spent.append(res.keys_spent)
    return {"coalition": kind, "k": k, "trials": args.trials, "colluder_named": named,
            "innocent_accused": innocent, "keys_spent_mean": statistics.mean(spent),
            "keys_spent_max": max(spent)}


def markdown(result: dict) -> str:
    """The table of one run."""
    lines = ["| coalition | k | colluder named | innocent accused | keys spent (mean / max) |",
             "|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['coalition']} | {r['k']} | {r['colluder_named']}/{r['trials']} | "
                     f"{r['innocent_accused']} | {r['keys_spent_mean']:.0f} / {r['keys_spent_max']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
