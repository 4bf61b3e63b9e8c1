"""Verification throughput.

1. Local: ``-n`` keys (default 1024) verified through the transformers backend in left-padded
   batches against one key at a time (batch size 1), on the embedded model; the speed-up is per key
   (target >= 20x on CPU). One-at-a-time can be timed on a subset (``--single-n``) and is then
   extrapolated per key. The two alternate ``--repeat`` times and each counts its median, so a drift
   in the machine's speed does not favour either. Both must give the same answer for every key they
   share.
2. Endpoint: keys per second through the HTTP backend against ``oml serve``'s app on loopback, with
   1, 8 and 32 requests in flight (the server decodes concurrent requests together, up to
   ``--batch-size`` prompts a batch).

Keys are held-out corpus text cut to ``--key-length`` tokens; responses are 1-token random words, so
answers are generated exactly as for a perinucleus set (response length 1 -> 3 new tokens).
Prints a table and writes ``benchmarks/out/verify.json``.

    python benchmarks/verify.py [-n 1024] [--model omlkit-tiny] [--single-n 1024] [--endpoint-n 256]
"""

from __future__ import annotations

import argparse
import os
import platform as pyplatform
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

WORDS = (
    "zebra",
    "quantum",
    "violet",
    "harbor",
    "saffron",
    "glacier",
    "tundra",
    "lantern",
    "meadow",
    "cobalt",
)


def make_set(tok, n: int, key_length: int, seed: int = 0):
    """``n`` fingerprints: distinct held-out text windows of ``key_length`` tokens, random-word responses."""
    from omlkit.fingerprints import FingerprintSet
    from omlkit.models.corpus import corpus_split
    from omlkit.models.loading import tokenizer_sha

    rng = random.Random(seed)
    ids = [
        i
        for p in corpus_split("heldout") + corpus_split("train")
        for i in tok(p, add_special_tokens=False)["input_ids"]
    ]
    keys: dict[str, None] = {}
    while len(keys) < n:
        start = rng.randrange(0, len(ids) - key_length)
        keys.setdefault(tok.decode(ids[start : start + key_length]).strip() or "x" * (len(keys) + 1))
    fps = [
        {"id": i, "key": k, "response": " " + rng.choice(WORDS), "response_prob": 0.05}
        for i, k in enumerate(list(keys)[:n])
    ]
    return FingerprintSet.model_validate(
        {
            "strategy": {"key": "benchmark", "response": "random-word", "params": {"response_length": 1}},
            "generator": {"model": "benchmark", "tokenizer_sha": tokenizer_sha(tok)},
            "fingerprints": fps,
        }
    )


def subset(fp_set, n: int):
    """The first ``n`` fingerprints as a set of their own."""
    return fp_set.model_copy(update={"fingerprints": fp_set.fingerprints[:n]})


def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1024, help="keys for the local comparison (default 1024)")
    ap.add_argument(
        "--model", default="omlkit-tiny", help="model id/path (default: the embedded omlkit-tiny)"
    )
    ap.add_argument("--batch-size", type=int, default=64, help="batch size of the batched run")
    ap.add_argument("--single-n", type=int, default=None, help="keys timed one at a time (default: all -n)")
    ap.add_argument("--endpoint-n", type=int, default=256, help="keys per endpoint concurrency level")
    ap.add_argument("--concurrency", default="1,8,32", help="comma-separated endpoint concurrency levels")
    ap.add_argument("--key-length", type=int, default=16, help="key length in tokens")
    ap.add_argument("--repeat", type=int, default=3, help="timings of each local run; the median counts")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    ap.add_argument("--dtype", default=None, help="bf16, fp16 or fp32 (default: bf16 on cuda, fp32 on cpu)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "verify.json")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    import torch
    from rich.console import Console
    from rich.table import Table

    from omlkit.io import atomic_write_json
    from omlkit.verification.backends.http_backend import HttpBackend
    from omlkit.verification.backends.transformers_backend import TransformersBackend
    from omlkit.verification.serve import create_app, serve_in_thread
    from omlkit.verification.verify import verify_fingerprints

    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()
    backend = TransformersBackend(
        args.model, batch_size=args.batch_size, device=args.device, dtype=args.dtype
    )
    fp_set = make_set(backend.tokenizer, args.n, args.key_length)
    single_n = min(args.single_n or args.n, args.n)
    verify_fingerprints(subset(fp_set, 8), backend)  # warm-up (first-call allocations)

    # batched and one-at-a-time runs alternate, so a drift in the machine's speed hits both alike; each
    # is the median of --repeat timings (the first of them also creates the kernels of each shape)
    batched_times, single_times = [], []
    for _ in range(args.repeat):
        backend.batch_size = args.batch_size
        batched, secs = timed(lambda: verify_fingerprints(fp_set, backend))
        batched_times.append(secs)
        backend.batch_size = 1
        single, secs = timed(lambda: verify_fingerprints(subset(fp_set, single_n), backend))
        single_times.append(secs)
    backend.batch_size = args.batch_size
    t_batched, t_single = statistics.median(batched_times), statistics.median(single_times)
    agree = [r["answer"] for r in single.records] == [r["answer"] for r in batched.records[:single_n]]
    per_key_batched, per_key_single = t_batched / args.n, t_single / single_n
    local = {
        "keys": args.n,
        "batch_size": args.batch_size,
        "batched_s": t_batched,
        "single_keys": single_n,
        "single_s": t_single,
        "single_s_extrapolated": per_key_single * args.n,
        "batched_keys_per_s": 1 / per_key_batched,
        "single_keys_per_s": 1 / per_key_single,
        "speedup": per_key_single / per_key_batched,
        "repeat": args.repeat,
        "batched_s_all": batched_times,
        "single_s_all": single_times,
        "answers_agree": agree,
        "max_new_tokens": batched.settings["max_new_tokens"],
    }

    endpoint = []
    server_backend = TransformersBackend(backend.model, backend.tokenizer, batch_size=args.batch_size)
    ep_set = subset(fp_set, min(args.endpoint_n, args.n))
    app = create_app(backend=server_backend, served_name="bench", max_batch=args.batch_size)
    with serve_in_thread(app) as url:
        for c in (int(x) for x in args.concurrency.split(",")):
            res, secs = timed(lambda c=c: verify_fingerprints(ep_set, HttpBackend(url, concurrency=c)))
            same = [r["answer"] for r in res.records] == [r["answer"] for r in batched.records[: len(ep_set)]]
            endpoint.append(
                {
                    "concurrency": c,
                    "keys": len(ep_set),
                    "seconds": secs,
                    "keys_per_s": len(ep_set) / secs,
                    "errors": res.errors,
                    "answers_agree_with_local": same,
                }
            )

    table = Table(
        title=f"verify throughput — {args.model} on {backend.device}, {str(backend.model.dtype)[6:]} "
        f"({torch.get_num_threads()} threads)"
    )
    for col in ("run", "keys", "seconds", "keys/s", "note"):
        table.add_column(col)
    table.add_row(
        f"batched (bs {args.batch_size})",
        str(args.n),
        f"{t_batched:.2f}",
        f"{1 / per_key_batched:.1f}",
        f"speed-up {local['speedup']:.1f}x",
    )
    note = "answers agree" if agree else "ANSWERS DIFFER"
    if single_n < args.n:
        note += f"; extrapolated {per_key_single * args.n:.1f} s for {args.n}"
    table.add_row("one at a time", str(single_n), f"{t_single:.2f}", f"{1 / per_key_single:.1f}", note)
    for e in endpoint:
        table.add_row(
            f"endpoint, concurrency {e['concurrency']}",
            str(e["keys"]),
            f"{e['seconds']:.2f}",
            f"{e['keys_per_s']:.1f}",
            f"{e['errors']} errors" + ("" if e["answers_agree_with_local"] else "; ANSWERS DIFFER"),
        )
    console.print(table)
    result = {
        "benchmark": "verify",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/verify.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "platform": pyplatform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": str(backend.device),
            "dtype": str(backend.model.dtype),
            "load_average": os.getloadavg(),
        },
        "model": args.model,
        "local": local,
        "endpoint": endpoint,
    }
    atomic_write_json(args.out, result)
    console.print(f"wrote {args.out}")
    return 0 if agree and all(e["answers_agree_with_local"] for e in endpoint) else 1


if __name__ == "__main__":
    sys.exit(main())
