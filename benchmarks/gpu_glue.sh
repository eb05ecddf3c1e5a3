#!/usr/bin/env bash
# Issue 3 results on one GPU: CUDA-graph tests, distillation speed, then SST-2 / MRPC / CoLA in
# parallel processes. Resumable: a second call on the same (warm) machine continues the runs.
# Usage (device): bash benchmarks/gpu_glue.sh OUTDIR   (expects .devdata/ with the MiniLM-L6 model
# and glue/{SST-2,MRPC,CoLA} copied from ../shared; carry .devdata)
set -u
OUT=${1:-runs/gpu}
mkdir -p "$OUT" runs
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false BITBERT_CACHE=runs/cache
M=.devdata/minilm-l6-h384-fp16
G=.devdata/glue
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
[ -z "${SKIP_TESTS:-}" ] && timeout 60 python -m pytest -q tests/test_graphs.py 2>&1 | tail -3 | tee "$OUT/gpu_tests.txt"
if [ -z "${SKIP_SPEED:-}" ] && [ ! -f runs/speed.done ]; then
  timeout 90 python benchmarks/distill_speed.py --model $M --data-dir $G/SST-2 --out "$OUT/distill_speed.json" \
    --batch-sizes ${SPEED_BATCHES:-32,128} --steps 100 --graphs on,off 2>&1 | grep -v Warn | tail -6
  touch runs/speed.done
fi
T=${GLUE_TIMEOUT:-420}
B=${BATCH:-32}
timeout $T python benchmarks/run_glue.py --task mrpc --model $M --data-dir $G/MRPC --out runs/glue --epochs ${MRPC_EPOCHS:-10} \
  --teacher-epochs 3 --batch-size $B --eval-every 100 --resume >> runs/mrpc.log 2>&1 &
timeout $T python benchmarks/run_glue.py --task cola --model $M --data-dir $G/CoLA --out runs/glue --epochs ${COLA_EPOCHS:-10} \
  --teacher-epochs 3 --batch-size $B --eval-every 200 --resume >> runs/cola.log 2>&1 &
timeout $T python benchmarks/run_glue.py --task sst2 --model $M --data-dir $G/SST-2 --out runs/glue --epochs ${SST2_EPOCHS:-2} \
  --teacher-epochs 1 --batch-size $B --eval-every 500 --resume >> runs/sst2.log 2>&1 &
wait
cp runs/glue/*.json runs/*.log "$OUT/" 2>/dev/null
grep -h '"task"' runs/*.log | tail -n 30
tail -n 2 runs/*.log
