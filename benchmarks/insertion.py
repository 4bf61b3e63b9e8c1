"""Insertion speed: wall time to 100% greedy recovery and training tokens/s, our recipe vs the textbook one.

Ours: ``InsertConfig`` with the chosen ``--recipe`` (mini-batches of 32, regularizers after every
step, early stop on full recovery). Textbook: the same recipe with full-batch steps, averaging once
per epoch, no early stop (recovery is still checked, only to time when it is first reached). The
default recipe is ``small-model``, the one that inserts into the embedded model; ``published``
(λ = 0.75 per step, β = 0.25) inserts nothing there. On CUDA, also training tokens/s and MFU of a
1B-parameter Llama shape with random weights.

    python benchmarks/insertion.py -n 256 1024 [--model omlkit-tiny] [--recipe small-model] [--fingerprints F]
    python benchmarks/insertion.py --model smollm2-135m-instruct --mfu fp32 bf16

Writes ``benchmarks/out/insertion.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

OUT = Path(__file__).parent / "out" / "insertion.json"


def fingerprint_file(model: str, n: int, workdir: Path, given: str | None) -> Path:
    """``given`` (its first n fingerprints), or n English-key/perinucleus fingerprints made for ``model``."""
    from omlkit.fingerprints.fingerprint_set import FingerprintSet

    path = workdir / f"fp-{n}.json"
    if given:
        fp_set = FingerprintSet.load(given)
        fp_set.fingerprints = fp_set.fingerprints[:n]
    else:
        from omlkit.fingerprints.config import GenerateConfig
        from omlkit.fingerprints.generate import generate_fingerprints

        fp_set = generate_fingerprints(GenerateConfig(n=n, target_model=model, progress=False))
    fp_set.save(path, overwrite=True)
    return path


FULL_BATCH = -1


def recipes(max_epochs: int) -> dict[str, dict]:
    """The two ways of training compared, as InsertConfig overrides (``FULL_BATCH``: every example)."""
    return {
        "ours": {"epochs": max_epochs},
        "textbook": {"epochs": max_epochs, "batch_size": FULL_BATCH, "averaging_interval": "epoch",
                     "early_stop": False},
    }


def run_recipe(model: str, fps: Path, out_dir: Path, overrides: dict) -> dict:
    """Train once; returns wall time, time to first full recovery, recovery and tokens/s."""
    from omlkit.fingerprints.fingerprint_set import FingerprintSet
    from omlkit.insertion.api import insert_fingerprints
    from omlkit.insertion.config import InsertConfig
    from omlkit.insertion.dataset import n_benign

    overrides = dict(overrides)
    full_batch = overrides.get("batch_size") == FULL_BATCH
    if full_batch:
        del overrides["batch_size"]
    cfg = InsertConfig(model=model, fingerprints=fps, out_dir=out_dir, checkpoint_every=0, force=True,
                       **overrides)
    if full_batch:
        n = len(FingerprintSet.load(fps))
        cfg.batch_size = n + n_benign(n, cfg.benign_fraction)
    start = time.time()
    run = insert_fingerprints(cfg, progress=False)
    wall = time.time() - start
    metrics = json.loads((run / "metrics.json").read_text())
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    t0 = min(r["time"] for r in log) - 1e-9
    first_full = next((r for r in log if r.get("recovered", 0) >= 1.0), None)
    return {
        "wall_seconds": round(wall, 2),
        "train_seconds": round(metrics["train_seconds"], 2),
        "seconds_to_full_recovery": round(first_full["time"] - t0, 2) if first_full else None,
        "epoch_of_full_recovery": first_full["epoch"] if first_full else None,
        "final_recovery": metrics["recovery"],
        "epochs": metrics["epochs"],
        "steps": metrics["global_step"],
        "tokens_per_second": round(metrics["tokens_per_second"] or 0.0, 1),
    }


def llama_1b_speed(steps: int = 10, batch: int = 8, seq: int = 1024) -> dict:
    """Training tokens/s and MFU of a 1.1B Llama shape (random weights, bf16 autocast, AdamW) on CUDA."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                      num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=seq)
    model = LlamaForCausalLM(cfg).cuda()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    x = torch.randint(0, cfg.vocab_size, (batch, seq), device="cuda")
    for i in range(steps + 2):
        if i == 2:
            torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    tps = batch * seq * steps / (time.perf_counter() - start)
    peak = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
    name = torch.cuda.get_device_name()
    peak_flops = next((v for k, v in peak.items() if k in name), None)
    flops_per_token = 6 * n_params + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq
    return {"device": name, "parameters": n_params, "tokens_per_second": round(tps),
            "mfu": round(tps * flops_per_token / peak_flops, 3) if peak_flops else None}


def matmul_peak(dtype, size: int = 2048, seconds: float = 3.0) -> float:
    """Measured FLOP/s of square ``size`` matmuls in ``dtype`` on this machine's CPU threads (the best
    of repeated one-second windows: the ceiling a training step can reach)."""
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.matmul(a, b)  # warm-up (oneDNN picks its kernel)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start, reps = time.perf_counter(), 0
        while time.perf_counter() - start < 1.0:
            torch.matmul(a, b)
            reps += 1
        best = max(best, 2 * size**3 * reps / (time.perf_counter() - start))
    return best


def training_mfu(model_name: str, precision: str, batch: int = 8, seq: int = 128, steps: int = 4) -> dict:
    """Full fine-tuning steps (AdamW) of ``model_name`` on random tokens, in fp32 or bf16 autocast:
    training tokens/s, achieved FLOP/s (6·N + attention per token) and its share of the measured matmul
    peak in that dtype."""
    import torch

    from omlkit.models.loading import load_model, resolve_model

    model, _ = load_model(resolve_model(model_name), device="cpu", dtype="fp32", tokenizer=False)
    model.train()
    cfg = model.config
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    x = torch.randint(0, cfg.vocab_size, (batch, seq))
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    tps = batch * seq * steps / (time.perf_counter() - start)
    flops_per_token = 6 * n_params + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq
    peak = matmul_peak(dtype)
    return {"model": model_name, "precision": precision, "parameters": n_params, "batch": batch, "seq": seq,
            "tokens_per_second": round(tps, 1), "achieved_gflops": round(tps * flops_per_token / 1e9, 1),
            "matmul_peak_gflops": round(peak / 1e9, 1), "mfu": round(tps * flops_per_token / peak, 3)}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, nargs="+", default=[256], help="Fingerprint counts (default 256).")
    ap.add_argument("--model", default="omlkit-tiny")
    ap.add_argument("--recipe", default="small-model", help="InsertConfig recipe (default: small-model).")
    ap.add_argument("--fingerprints", help="Use this fingerprint file instead of generating.")
    ap.add_argument("--max-epochs", type=int, default=60)
    ap.add_argument("--ways", nargs="+", default=["ours", "textbook"], choices=["ours", "textbook"],
                    help="Which of the two ways of training to run (default: both).")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="InsertConfig override for both recipes (JSON value), e.g. learning_rate=1e-3.")
    ap.add_argument("--mfu", nargs="+", choices=["fp32", "bf16"], default=[],
                    help="Only measure full fine-tuning steps of --model on random tokens in these "
                         "precisions: tokens/s and the share of the measured matmul peak (MFU).")
    args = ap.parse_args(argv)
    if args.mfu:
        return mfu_main(args, argv)
    common = {"recipe": args.recipe}
    for item in args.set:
        field, _, value = item.partition("=")
        try:
            common[field] = json.loads(value)
        except json.JSONDecodeError:
            common[field] = value

    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for n in args.n:
            fps = fingerprint_file(args.model, n, work, args.fingerprints)
            for name, overrides in recipes(args.max_epochs).items():
                if name not in args.ways:
                    continue
                res = run_recipe(args.model, fps, work / name, {**common, **overrides})
                rows.append({"n": n, "recipe": name, **res})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    speedups = {}
    for n in args.n:
        ours = next((r for r in rows if r["n"] == n and r["recipe"] == "ours"), None)
        text = next((r for r in rows if r["n"] == n and r["recipe"] == "textbook"), None)
        if ours and text and ours["final_recovery"] == 1.0:
            # the textbook recipe has no early stop: a user waits for its whole run. When that run never
            # reaches 100 %, the ratio is only a lower bound ("at least").
            speedups[str(n)] = {"ratio": round(text["train_seconds"] / ours["train_seconds"], 2),
                                "lower_bound": text["seconds_to_full_recovery"] is None}
    command = "python benchmarks/insertion.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "command": command,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_average_after": os.getloadavg()},
              "model": args.model, "threads": torch.get_num_threads(), "overrides": common,
              "rows": rows, "speedup_to_full_recovery": speedups}
    if torch.cuda.is_available():
        result["llama_1b"] = llama_1b_speed()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    head = (f"{'n':>5} {'recipe':>9} {'to 100% (s)':>11} {'train (s)':>9} {'epochs':>6} {'recov':>6} "
            f"{'tok/s':>8}")
    print(head)
    for r in rows:
        to_full = "never" if r["seconds_to_full_recovery"] is None else f"{r['seconds_to_full_recovery']:.1f}"
        print(f"{r['n']:>5} {r['recipe']:>9} {to_full:>11} {r['train_seconds']:>9.1f} {r['epochs']:>6.0f} "
              f"{r['final_recovery']:>6.2f} {r['tokens_per_second']:>8.0f}")
    for n, sp in speedups.items():
        bound = " at least (the textbook run never reached 100 %)" if sp["lower_bound"] else ""
        print(f"speed-up at n={n} (textbook run / ours to 100%): {sp['ratio']}x{bound}")
    if "llama_1b" in result:
        print(f"1B Llama: {result['llama_1b']}")
    print(f"wrote {args.out}")
    return 0


def mfu_main(args, argv: list[str] | None) -> int:
    """``--mfu``: print a table and write ``<out>`` (default ``benchmarks/out/insertion_mfu.json``)."""
    import torch

    from omlkit.hardware import machine_line

    rows = [training_mfu(args.model, p) for p in args.mfu]
    out = args.out if args.out != OUT else OUT.with_name("insertion_mfu.json")
    command = "python benchmarks/insertion.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "command": command,
              "machine": machine_line(), "threads": torch.get_num_threads(),
              "load_average_after": os.getloadavg(), "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'precision':>9} {'tok/s':>8} {'GFLOP/s':>8} {'peak':>8} {'MFU':>6}")
    for r in rows:
        print(f"{r['precision']:>9} {r['tokens_per_second']:>8.0f} {r['achieved_gflops']:>8.1f} "
              f"{r['matmul_peak_gflops']:>8.1f} {r['mfu']:>6.1%}")
    print(f"{machine_line()}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
