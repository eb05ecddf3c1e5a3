#!/usr/bin/env bash
# Issue 5 results: BiPFT binary pretraining of MiniLM-L6 (A: residual rank 0, B: rank 1), then SST-2 /
# MRPC / CoLA fine-tuning without distillation, against the same 1-1-1 student not pretrained.
# Usage (device, from the repository root; expects .devdata/ from the README's recipe plus
# .devdata/corpus/english.txt.xz):
#   bash benchmarks/gpu_bipft.sh OUTDIR            # one GPU; every process ends by DEADLINE (545 s)
#   bash benchmarks/gpu_bipft.sh OUTDIR scaling    # 2 GPUs: the same pretraining on 1 and 2 processes
# Writes OUTDIR/{gpu.txt, bipft_minilm.json, logs.txt}: 3 files. Budgets come from the variables below.
#
# Timeline (main): t=0 the no-pretrain fine-tunes start beside both pretraining runs (each stops after
# PT_SECONDS of training or PT_TOKENS tokens, whichever first); as each pretraining ends, its three
# fine-tunes start. Runs still going at DEADLINE are stopped and `collect` reports their evaluations so far.
set -u
NEED=${CORPUS:-.devdata/corpus/english.txt.xz} source benchmarks/require_devdata.sh
OUT=${1:-runs/gpu-bipft}
MODE=${2:-main}
R=${BIPFT_RUNS:-runs/bipft}
mkdir -p "$OUT" "$R/logs"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false BITBERT_CACHE=runs/cache
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # never NVLink multicast
M=${MODEL:-.devdata/minilm-l6-h384-fp16}
G=${GLUE:-.devdata/glue}
C=${CORPUS:-.devdata/corpus/english.txt.xz}
DEADLINE=${DEADLINE:-545}
left() { local s=$((DEADLINE - SECONDS)); echo $((s > 1 ? s : 1)); }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" >> "$OUT/gpu.txt"
# batch 128 x seq 128 = 16,384 tokens a step and process; bf16 on GPU.
PT="--model $M --corpus $C --runs $R --batch-size ${PT_BATCH:-128} --seq-len 128 --holdout-every 50 --heldout-sequences 512 --num-workers 1 ${PT_EXTRA:-}"

finetune_all() {  # VARIANT: SST-2, MRPC, CoLA in parallel, reduced epochs (BiPFT's are 10 / 20 / 50)
  local v=$1
  for spec in "sst2 SST-2 ${SST2_EPOCHS:-1} 200" "mrpc MRPC ${MRPC_EPOCHS:-5} 50" "cola CoLA ${COLA_EPOCHS:-5} 100"; do
    set -- $spec
    timeout -k 5 "$(left)" python benchmarks/run_bipft.py finetune --variant "$v" --task "$1" --data-dir "$G/$2" \
      --model "$M" --runs "$R" --epochs "$3" --eval-every "$4" ${FT_EXTRA:-} > "$R/logs/$v-$1.log" 2>&1 &
  done
  wait
}

if [ "$MODE" = scaling ]; then
  # Fixed steps, same per-process batch: 2 processes see twice the tokens a step. ~250 s each at most.
  S="$PT --variant scaling --max-steps ${SCALE_STEPS:-800} --eval-every ${SCALE_EVAL:-200} --log-every 10"
  timeout -k 5 250 python benchmarks/run_bipft.py pretrain $S > "$R/logs/scaling-1.log" 2>&1
  timeout -k 5 "$(left)" accelerate launch --num_processes 2 --num_machines 1 --multi_gpu --mixed_precision bf16 \
    --dynamo_backend no benchmarks/run_bipft.py pretrain $S > "$R/logs/scaling-2.log" 2>&1
else
  [ -z "${SKIP_NO_PRETRAIN:-}" ] && finetune_all no-pretrain &
  for v in bipft-a bipft-b; do
    ( timeout -k 5 "${PT_TIMEOUT:-300}" python benchmarks/run_bipft.py pretrain --variant $v $PT \
        --max-tokens "${PT_TOKENS:-20000000}" --max-seconds "${PT_SECONDS:-170}" --eval-every "${PT_EVAL:-200}" \
        > "$R/logs/pretrain-$v.log" 2>&1
      [ -f "$R/$v/pretrain/model/model.safetensors" ] && finetune_all $v ) &
  done
  wait
fi
timeout 20 python benchmarks/run_bipft.py collect --runs "$R" --to "$OUT/bipft_minilm.json" > "$R/logs/collect.log" 2>&1
for f in "$R"/logs/*.log; do echo "== $f"; grep -v -e Warn -e '^Loading' "$f" | tail -n 6; done > "$OUT/logs.txt"
cat "$R/logs/collect.log"
