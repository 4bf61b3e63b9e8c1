"""Fingerprint generation throughput: English keys + perinucleus responses, batched vs one at a time.

Generates ``-n`` fingerprints (default 1024) on the embedded model with ``--batch-size`` (default 128),
then ``--sequential-n`` of them (default: the same ``-n``) with batch size 1, and reports
fingerprints per second for each and the speed-up. Models are loaded once before timing; a small
warm-up run is not timed. Prints a table and writes ``benchmarks/out/generate.json``.

    python benchmarks/generate.py [-n 1024] [--sequential-n N] [--batch-size 128] [--model omlkit-tiny]
                                  [--threads T] [--device cpu] [--out benchmarks/out/generate.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from pathlib import Path

import torch

from omlkit.config import build_config
from omlkit.fingerprints.config import GenerateConfig
from omlkit.fingerprints.generate import generate_fingerprints
from omlkit.io import atomic_write_json
from omlkit.models.loading import DEFAULT_MODEL, load_model


def timed_run(model_name: str, target, n: int, batch_size: int, seed: int) -> dict:
    """Generate ``n`` English/perinucleus fingerprints; returns seconds, rate and a content hash."""
    cfg = build_config(
        GenerateConfig,
        {
            "n": n,
            "batch_size": batch_size,
            "seed": seed,
            "progress": False,
            "target_model": model_name,
            "key_strategy": "english",
            "response_strategy": "perinucleus",
        },
    )
    start = time.perf_counter()
    fp_set = generate_fingerprints(cfg, target=target)
    seconds = time.perf_counter() - start
    return {
        "n": len(fp_set),
        "batch_size": batch_size,
        "seconds": round(seconds, 3),
        "fingerprints_per_s": round(len(fp_set) / seconds, 2),
        "set_sha256": fp_set.content_hash()[:16],
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the JSON record it writes."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1024, help="fingerprints in the batched run (default 1024)")
    ap.add_argument(
        "--sequential-n", type=int, default=None, help="fingerprints in the one-at-a-time run (default: -n)"
    )
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "generate.json")
    args = ap.parse_args(argv)
    if args.n < 1 or (args.sequential_n is not None and args.sequential_n < 1):
        ap.error("-n and --sequential-n must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    seq_n = args.sequential_n or args.n

    target = load_model(args.model, device=args.device)
    timed_run(args.model, target, 2, 2, args.seed + 1)  # warm-up: lazy imports, allocator, word mask
    batched = timed_run(args.model, target, args.n, args.batch_size, args.seed)
    sequential = timed_run(args.model, target, seq_n, 1, args.seed)
    speedup = batched["fingerprints_per_s"] / sequential["fingerprints_per_s"]

    record = {
        "benchmark": "generate",
        "strategy": "english/perinucleus",
        "model": args.model,
        "device": str(next(target[0].parameters()).device),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "batched": batched,
        "one_at_a_time": sequential,
        "speedup": round(speedup, 2),
    }
    print(f"{'run':<14} {'n':>6} {'batch':>6} {'seconds':>9} {'fp/s':>9}")
    for name, row in (("batched", batched), ("one-at-a-time", sequential)):
        print(
            f"{name:<14} {row['n']:>6} {row['batch_size']:>6} {row['seconds']:>9.2f} "
            f"{row['fingerprints_per_s']:>9.2f}"
        )
    print(f"speed-up (fp/s, batched / one-at-a-time): {speedup:.1f}x")
    atomic_write_json(args.out, record)
    print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
