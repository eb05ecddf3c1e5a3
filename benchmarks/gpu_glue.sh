#!/usr/bin/env bash
# Issue 3 results on one GPU: distillation speed, then SST-2 / MRPC / CoLA in parallel processes.
# Usage (device): bash benchmarks/gpu_glue.sh OUTDIR   (expects .devdata/ from the README's recipe)
set -u
OUT=${1:-runs/gpu}
mkdir -p "$OUT" runs
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false BITBERT_CACHE=runs/cache
M=.devdata/minilm-l6-h384-fp16
G=.devdata/glue
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
timeout 75 python benchmarks/distill_speed.py --model $M --data-dir $G/SST-2 --out "$OUT/distill_speed.json" \
  --batch-sizes ${SPEED_BATCHES:-128,256,512} --steps 30 --compile off 2>&1 | grep -v Warn | tail -6
T=${GLUE_TIMEOUT:-450}
timeout $T python benchmarks/run_glue.py --task mrpc --model $M --data-dir $G/MRPC --out runs/glue --epochs ${MRPC_EPOCHS:-8} \
  --teacher-epochs 3 --batch-size 32 --eval-every 50 > "$OUT/mrpc.log" 2>&1 &
timeout $T python benchmarks/run_glue.py --task cola --model $M --data-dir $G/CoLA --out runs/glue --epochs ${COLA_EPOCHS:-4} \
  --teacher-epochs 3 --batch-size 32 --eval-every 100 > "$OUT/cola.log" 2>&1 &
timeout $T python benchmarks/run_glue.py --task sst2 --model $M --data-dir $G/SST-2 --out runs/glue --epochs ${SST2_EPOCHS:-1} \
  --teacher-epochs 1 --batch-size 256 --lr 3e-4 --eval-every 50 > "$OUT/sst2.log" 2>&1 &
wait
cp runs/glue/*.json "$OUT/" 2>/dev/null
tail -n 3 "$OUT"/*.log
