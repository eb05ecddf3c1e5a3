#!/usr/bin/env bash
# Issue 22 on one GPU, in calls of at most 10 minutes: BiT's runs with TinyBERT-style data augmentation.
#   1. the MiniLM teacher's masked-LM head (benchmarks/gpu_mlm_head.sh), and meanwhile the SST-2 model that
#      ships without augmentation (the reference recipe, 3 epochs a stage) and, with PAIRS=1, the
#      sentence-pair probes of issue 26;
#   2. `bitbert augment` of MRPC, CoLA and SST-2 with that head (MRPC/CoLA: TinyBERT's N = 30; SST-2: N = 4,
#      what an H100 call can train on);
#   3. bit 1-1-2 -> 1-1-1, bibert 1-1-1 and baseline 1-1-1 on the augmented files (seed 42; bit also seed 43
#      on MRPC and CoLA), batch 128, each stage AUG_EPOCHS over the augmented set.
# Usage (device, from the repository root; carry .devdata with minilm-l6-h384-fp16/, glue/ and corpus/):
#   mkdir -p runs; bash benchmarks/gpu_augment.sh $OUT
# Resumable: the same command on a warm machine continues (runs/ stays); on a fresh one, carry the augmented
# files back as .devdata/aug/{mrpc,cola,sst2}.tsv (from aug.tgz) and step 1-2 are skipped.
# Everything stops at DEADLINE seconds (default 550) and leaves in $OUT: results.tgz (records, logs, reports),
# aug.tgz (the augmented files), ship.bitbert (the packed SST-2 student, once trained) and the masked LM as
# mlm-minilm-l6.tar.part-* (first call only).
set -u
NEED=.devdata/glue/MRPC/train.tsv source benchmarks/require_devdata.sh
OUT=${1:?usage: bash benchmarks/gpu_augment.sh OUTDIR}
T0=$(date +%s)
DEADLINE=${DEADLINE:-550}
rem() { echo $(( DEADLINE - ($(date +%s) - T0) )); }
mkdir -p "$OUT" runs/logs
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false \
  PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
M=.devdata/minilm-l6-h384-fp16
G=.devdata/glue
SMOKE=${SMOKE:+--max-steps 3 --max-train-examples 64}  # SMOKE=1: a CPU check of the plumbing
AUG_TASKS=${AUG_TASKS-mrpc,cola,sst2}  # (empty: the ship run only); which tasks get augmented files and students (in that order of need)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > runs/logs/gpu.txt 2>&1

# Where the augmented files are: carried back (a fresh machine; as .devdata/aug/ or, under the carry
# limit, packed as .devdata/aug.tgz of aug/) or made here.
[ -f .devdata/aug.tgz ] && [ ! -d .devdata/aug ] && tar -xzf .devdata/aug.tgz -C .devdata
if [ -f .devdata/aug/mrpc.tsv ]; then A=.devdata/aug; else A=runs/aug; fi
mkdir -p $A

# ---- 1. masked-LM head | SST-2 ship run | pair probes, in parallel
pids=()
if [ -n "$AUG_TASKS" ] && [ ! -f $A/mrpc.tsv ] && [ ! -d runs/mlm-head/mlm-minilm-l6 ]; then
  HEAD_SECONDS=${HEAD_SECONDS:-150} ENC_SECONDS=${ENC_SECONDS:-170} HEAD_TIMEOUT=${HEAD_TIMEOUT:-240} ENC_TIMEOUT=${ENC_TIMEOUT:-250} \
    bash benchmarks/gpu_mlm_head.sh runs/mlm-out > runs/logs/mlm.log 2>&1 &
  MLM_PID=$!
else
  MLM_PID=
fi
[ "${SHIP:-1}" = 1 ] && SKIP_TESTS=1 SKIP_SPEED=1 GLUE_OUT=runs/glue-ship GLUE_TIMEOUT=$(rem) TASKS=sst2 SST2_EPOCHS=${SHIP_EPOCHS:-3} \
  SST2_TEACHER_EPOCHS=1 SST2_RUNS='bit:1-1-2,1-1-1' SST2_ARGS="--seed 43 $SMOKE" \
  bash benchmarks/gpu_glue.sh runs/out-ship > runs/logs/ship.log 2>&1 &  # SHIP=0: the ship run is done
pids+=($!)
if [ -n "${PAIRS:-}" ] && [ -z "$SMOKE" ] && [ ! -f runs/pairs.done ]; then  # PAIRS=1: issue 26's probes too
  ( PAIRS_TIMEOUT=$(( $(rem) - 20 )) SEEDS='42 43' \
    PROBES=${PAIR_PROBES:-'long30|--runs bit:1-1-1 --epochs 30;longresid|--runs bit:1-1-1 --epochs 10 --quant residual_rank=4;multi10|--runs bit:1-1-2,1-1-1 --epochs 10'} \
    bash benchmarks/gpu_pairs.sh runs/out-pairs > runs/logs/pairs.log 2>&1 && touch runs/pairs.done ) &
  pids+=($!)
fi
[ -n "$MLM_PID" ] && wait $MLM_PID

# ---- 2. the augmented files (all three tasks at once)
augment() {  # task dir copies
  [ -f $A/$1.tsv ] && return
  timeout $(( $(rem) - 10 )) python -m bitbert.cli augment --mlm runs/mlm-head/mlm-minilm-l6 --task $1 \
    --data-dir $G/$2 --copies $3 --seed 42 --batch-size 1024 --out $A/$1.tsv \
    ${SMOKE:+--max-train-examples 16} > runs/logs/augment-$1.log 2>&1
}
if [ -d runs/mlm-head/mlm-minilm-l6 ]; then
  ( [[ ,$AUG_TASKS, == *,mrpc,* ]] && augment mrpc MRPC 30 &
    [[ ,$AUG_TASKS, == *,cola,* ]] && augment cola CoLA 30 &
    [[ ,$AUG_TASKS, == *,sst2,* ]] && augment sst2 SST-2 ${SST2_COPIES:-4} &
    wait )
fi

# ---- 3. students on the augmented files (one gpu_glue.sh per seed; '|' = parallel processes)
E=${AUG_EPOCHS:-1}
aug_runs() {  # seed tasks runs
  local args="--batch-size 128 $SMOKE"
  SKIP_TESTS=1 SKIP_SPEED=1 GLUE_OUT=runs/glue-aug$1 GLUE_TIMEOUT=$(( $(rem) - 15 )) TASKS=$2 \
    MRPC_EPOCHS=$E COLA_EPOCHS=$E SST2_EPOCHS=$E SST2_TEACHER_EPOCHS=1 \
    MRPC_RUNS="$3" COLA_RUNS="$3" SST2_RUNS="$3" \
    MRPC_ARGS="--seed $1 $args --augmented-file $A/mrpc.tsv" COLA_ARGS="--seed $1 $args --augmented-file $A/cola.tsv" \
    SST2_ARGS="--seed $1 $args --augmented-file $A/sst2.tsv" \
    bash benchmarks/gpu_glue.sh runs/out-aug$1 > runs/logs/aug$1.log 2>&1
}
have=$(for t in ${AUG_TASKS//,/ }; do [ -f $A/$t.tsv ] && echo -n "$t,"; done)
if [ -n "$have" ]; then
  aug_runs 42 "${have%,}" 'bit:1-1-2,1-1-1|bibert:1-1-1;baseline:1-1-1' &
  pids+=($!)
  pairs43=$(echo "${have%,}" | sed 's/,*sst2//')
  [ -n "$pairs43" ] && { aug_runs 43 "$pairs43" 'bit:1-1-2,1-1-1' & pids+=($!); }
fi

# ---- what comes back: refreshed until everything ends or the deadline
collect() {
  local ship
  ship=$(ls -d runs/glue-ship/sst2/bit-1-1-2_1-1-1/stage*-1-1-1/model 2>/dev/null | tail -n 1)
  if [ -n "$ship" ] && [ -f "$ship/config.json" ] && [ ! -f "$OUT/ship.bitbert" ] && [ -f runs/glue-ship/sst2.json ]; then
    python -m bitbert.cli export "$ship" "$OUT/ship.bitbert" > runs/logs/export.log 2>&1 || rm -f "$OUT/ship.bitbert"
  fi
  tar czf "$OUT/results.tgz.tmp" runs/logs runs/out-* runs/mlm-out/mlm_head.json runs/glue-*/*.json runs/glue-*/p*/*.json \
    $(find runs/glue-* -name metrics.jsonl -o -name progress.json -o -name run.json 2>/dev/null) \
    runs/pairs-*.log runs/pairs/records $A/*.augment.json $A/*.log 2>/dev/null
  mv "$OUT/results.tgz.tmp" "$OUT/results.tgz"
}
while [ "$(rem)" -gt 5 ] && [ -n "$(jobs -rp)" ]; do sleep 5; done
collect
ls $A/*.tsv > /dev/null 2>&1 && [ "$A" = runs/aug ] && [ ! -f "$OUT/aug.tgz" ] && tar czf "$OUT/aug.tgz" --exclude='*.parts' -C runs aug
ls runs/mlm-out/mlm-minilm-l6.tar.part-* > /dev/null 2>&1 && cp runs/mlm-out/mlm-minilm-l6.tar.part-* "$OUT/"
ls -la "$OUT"
grep -h '"task"' runs/glue-*/logs/*.log 2>/dev/null | tail -n 20 | cut -c1-300
