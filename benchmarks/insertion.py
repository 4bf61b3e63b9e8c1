"""Insertion speed: wall time to 100% greedy recovery and training tokens/s, our recipe vs the textbook one.

Ours: ``InsertConfig`` with the chosen ``--recipe`` (mini-batches of 32, regularizers after every
step, early stop on full recovery). Textbook: the same recipe with full-batch steps, averaging once
per epoch, no early stop (recovery is still checked, only to time when it is first reached). The
default recipe is ``small-model``, the one that inserts into the embedded model; ``published``
(λ = 0.75 per step, β = 0.25) inserts nothing there. ``--mfu``: training tokens/s of a model as a share
of the measured matmul peak (on CUDA when there is one); ``--llama-1b``: the same for a 1.1B-parameter
Llama shape with random weights, on CUDA only (``benchmarks/gpu.sh`` runs them on a lent GPU).

    python benchmarks/insertion.py -n 256 1024 [--model omlkit-tiny] [--recipe small-model] [--fingerprints F]
    python benchmarks/insertion.py --model smollm2-135m-instruct --mfu fp32 bf16 [--mfu-shape 32x512]
    python benchmarks/insertion.py --llama-1b 8x1024 16x2048 8x1024:compile

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


#: Datasheet dense bf16 peaks (FLOP/s) by device-name fragment; MFU is also given against the measured one.
DATASHEET_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def llama_1b_config(seq: int):
    """The 1.1B Llama shape (TinyLlama's: 22 layers, width 2048, grouped-query attention 32/4)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                       num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=seq)


def parse_speed_spec(spec: str) -> dict:
    """``BATCHxSEQ[:bf16][:compile]`` → options of :func:`llama_speed` (``bf16``: bf16 weights and AdamW
    states; default: fp32 master weights under bf16 autocast, what ``oml insert --precision bf16`` does)."""
    shape, *flags = spec.split(":")
    batch, _, seq = shape.partition("x")
    unknown = set(flags) - {"bf16", "compile"}
    if not (batch.isdigit() and seq.isdigit()) or unknown:
        raise SystemExit(f"bad --llama-1b spec {spec!r}: expected BATCHxSEQ[:bf16][:compile], e.g. 8x1024")
    return {"batch": int(batch), "seq": int(seq), "bf16_weights": "bf16" in flags,
            "compile": "compile" in flags}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _train_step(forward, optimizer, x, device, autocast: bool) -> None:
    """One full training step on ``x`` as its own labels: forward (bf16 autocast if asked), backward,
    optimizer step."""
    import torch

    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = forward(input_ids=x, labels=x).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def flops_per_token(n_params: int, config, seq: int) -> int:
    """Training FLOPs a token: 6·N for the weights plus 12·layers·hidden·seq for attention."""
    return 6 * n_params + 12 * config.num_hidden_layers * config.hidden_size * seq


def llama_speed(batch: int, seq: int, bf16_weights: bool = False, compile: bool = False, steps: int = 10,
                config=None, device: str | None = None) -> dict:
    """Training steps (AdamW) of a Llama shape (default the 1.1B one) with random weights: the median
    step of ``steps`` after two warm-ups, tokens/s and achieved FLOP/s (6·N + 12·L·H·seq a token)."""
    import torch
    from transformers import LlamaForCausalLM

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = config or llama_1b_config(seq)
    with dev:
        model = LlamaForCausalLM(cfg)
    if bf16_weights:
        model.to(torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=dev.type == "cuda")
    forward = torch.compile(model) if compile else model
    x = torch.randint(0, cfg.vocab_size, (batch, seq), device=dev)
    times = []
    for i in range(steps + 2):
        _sync(dev)
        start = time.perf_counter()
        _train_step(forward, opt, x, dev, autocast=not bf16_weights)
        _sync(dev)
        if i >= 2:
            times.append(time.perf_counter() - start)
    step = sorted(times)[len(times) // 2]
    tps = batch * seq / step
    flops = tps * flops_per_token(n_params, cfg, seq)
    name = _device_name(dev)
    datasheet = next((v for k, v in DATASHEET_BF16.items() if k in name), None)
    return {"device": name, "parameters": n_params, "batch": batch, "seq": seq, "bf16_weights": bf16_weights,
            "compile": compile, "step_seconds": round(step, 4), "tokens_per_second": round(tps),
            "flops_per_second": flops, "mfu_datasheet": round(flops / datasheet, 3) if datasheet else None,
            "peak_memory_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 1)
            if dev.type == "cuda" else None}


def llama_main(specs: list[str], out: Path, argv: list[str] | None) -> int:
    """``--llama-1b``: the 1.1B Llama shape under each spec, MFU against the measured bf16 matmul peak;
    prints a table and writes ``<out>`` (default ``benchmarks/out/insertion_llama1b.json``)."""
    import torch

    from omlkit.hardware import machine_line

    options = [parse_speed_spec(s) for s in specs]
    if not torch.cuda.is_available():
        raise SystemExit("--llama-1b measures a GPU: no CUDA device here")
    peak = matmul_peak(torch.bfloat16, device="cuda")
    rows = []
    for opts in options:
        try:
            row = llama_speed(**opts)
        except torch.cuda.OutOfMemoryError:
            print(f"{opts}: out of GPU memory", file=sys.stderr, flush=True)
            torch.cuda.empty_cache()
            continue
        row["mfu_measured_peak"] = round(row["flops_per_second"] / peak, 3)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.empty_cache()
    out = out if out != OUT else OUT.with_name("insertion_llama1b.json")
    command = "python benchmarks/insertion.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "command": command,
              "machine": machine_line(), "torch": torch.__version__,
              "matmul_peak_bf16_tflops": round(peak / 1e12, 1), "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'batch x seq':>12} {'weights':>8} {'compile':>7} {'tok/s':>8} {'TFLOP/s':>8} {'MFU':>6} "
          f"{'MFU*':>6}")
    for r in rows:
        weights = "bf16" if r["bf16_weights"] else "fp32+ac"
        print(f"{r['batch']:>5} x {r['seq']:<5} {weights:>8} {str(r['compile']):>7} "
              f"{r['tokens_per_second']:>8} {r['flops_per_second'] / 1e12:>8.1f} "
              f"{r['mfu_measured_peak']:>6.1%} {r['mfu_datasheet'] or 0:>6.1%}")
    print(f"MFU: of the measured bf16 matmul peak ({peak / 1e12:.0f} TFLOP/s); MFU*: of the datasheet's. "
          f"{machine_line()}; wrote {out}")
    return 0


def matmul_peak(dtype, size: int | None = None, seconds: float = 3.0, device: str = "cpu") -> float:
    """Measured FLOP/s of square ``size`` matmuls in ``dtype`` on ``device`` (CPU threads: 2048; CUDA:
    8192, random data): the best of repeated one-second windows, the ceiling a training step can reach."""
    import torch

    dev = torch.device(device)
    size = size or (8192 if dev.type == "cuda" else 2048)
    a = torch.randn(size, size, dtype=dtype, device=dev)
    b = torch.randn(size, size, dtype=dtype, device=dev)
    for _ in range(3):  # warm-up (oneDNN / cuBLAS pick their kernels)
        torch.matmul(a, b)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        _sync(dev)
        start, reps = time.perf_counter(), 0
        while time.perf_counter() - start < 1.0:
            torch.matmul(a, b)
            reps += 1
            if reps % 16 == 0:
                _sync(dev)
        _sync(dev)
        best = max(best, 2 * size**3 * reps / (time.perf_counter() - start))
    return best


def training_mfu(model_name: str, precision: str, batch: int = 8, seq: int = 128, steps: int = 4) -> dict:
    """Full fine-tuning steps (AdamW) of ``model_name`` on random tokens, in fp32 or bf16 autocast, on
    CUDA when there is one (else the CPU threads): training tokens/s, achieved FLOP/s (6·N + attention
    per token) and its share of the measured matmul peak in that dtype on that device."""
    import torch

    from omlkit.models.loading import load_model, resolve_model

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, _ = load_model(resolve_model(model_name), device=str(dev), dtype="fp32", tokenizer=False)
    model.train()
    cfg = model.config
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    x = torch.randint(0, cfg.vocab_size, (batch, seq), device=dev)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    for i in range(steps + 1):
        if i == 1:
            _sync(dev)
            start = time.perf_counter()
        _train_step(model, opt, x, dev, autocast=precision == "bf16")
    _sync(dev)
    tps = batch * seq * steps / (time.perf_counter() - start)
    flops = tps * flops_per_token(n_params, cfg, seq)
    peak = matmul_peak(dtype, device=str(dev))
    return {"model": model_name, "device": _device_name(dev), "precision": precision,
            "parameters": n_params, "batch": batch, "seq": seq, "tokens_per_second": round(tps, 1),
            "achieved_gflops": round(flops / 1e9, 1), "matmul_peak_gflops": round(peak / 1e9, 1),
            "mfu": round(flops / peak, 3)}


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
    ap.add_argument("--mfu-shape", default="8x128", metavar="BATCHxSEQ",
                    help="Batch and sequence length of the --mfu steps (default 8x128, a CPU's size).")
    ap.add_argument("--llama-1b", nargs="+", default=[], metavar="SPEC",
                    help="Only measure training steps of a 1.1B Llama shape (random weights) on CUDA, one "
                         "row a spec BATCHxSEQ[:bf16][:compile] (bf16: bf16 weights, else fp32 weights under "
                         "bf16 autocast), e.g. 8x1024 8x1024:compile.")
    args = ap.parse_args(argv)
    if args.llama_1b:
        return llama_main(args.llama_1b, args.out, argv)
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
    print(f"wrote {args.out}")
    return 0


def mfu_main(args, argv: list[str] | None) -> int:
    """``--mfu``: print a table and write ``<out>`` (default ``benchmarks/out/insertion_mfu.json``)."""
    import torch

    from omlkit.hardware import machine_line

    shape = parse_speed_spec(args.mfu_shape)
    rows = [training_mfu(args.model, p, batch=shape["batch"], seq=shape["seq"]) for p in args.mfu]
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
