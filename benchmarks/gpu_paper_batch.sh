#!/usr/bin/env bash
# Issue 3, one GPU call (resumable like gpu_glue.sh): MRPC at BiT's batch 8 and CoLA at its batch 16
# (20 epochs a stage), beside a teacher sweep (MRPC and CoLA teachers at 10 epochs, lr 5e-5 and 1e-4)
# that tells whether gpu_glue.sh's 3-epoch teacher is undertrained. Usage (device): bash
# benchmarks/gpu_paper_batch.sh OUTDIR. Back here: merge OUTDIR/{b8,c16}/records.json and
# OUTDIR/teachers.json with merge_results.py (--cut for the unpacked runs.tgz of cut runs).
set -u
source benchmarks/require_devdata.sh
OUT=${1:-runs/gpu}
mkdir -p "$OUT" runs  # before the teacher loop writes runs/teachers.log
export SKIP_TESTS=1 SKIP_SPEED=1 GLUE_TIMEOUT=${GLUE_TIMEOUT:-500}
BATCH=8 TASKS=mrpc MRPC_EPOCHS=20 GLUE_OUT=runs/b8 \
  MRPC_RUNS='baseline:1-1-1|bibert:1-1-1|bit:1-1-1|bit:1-1-2,1-1-1' bash benchmarks/gpu_glue.sh "$OUT/b8" > "$OUT/b8.log" 2>&1 &
BATCH=16 TASKS=cola COLA_EPOCHS=20 GLUE_OUT=runs/c16 \
  COLA_RUNS='baseline:1-1-1|bibert:1-1-1|bit:1-1-1|bit:1-1-2,1-1-1' bash benchmarks/gpu_glue.sh "$OUT/c16" > "$OUT/c16.log" 2>&1 &
(
  export PYTHONPATH=$PWD BITBERT_CACHE=runs/cache TOKENIZERS_PARALLELISM=false
  for t in ${TEACHER_TASKS:-mrpc:MRPC:100 cola:CoLA:200}; do
    IFS=: read -r task dir every <<< "$t"
    for lr in 5e-5 1e-4; do  # teacher only (--runs ""): its record has the dev history
      timeout 200 python benchmarks/run_glue.py --task $task --model .devdata/minilm-l6-h384-fp16 \
        --data-dir .devdata/glue/$dir --epochs 20 --teacher-epochs 10 --teacher-lr $lr --eval-every $every \
        --out runs/teachers-$lr --runs "" --resume ${TEACHER_ARGS:-} >> runs/teachers.log 2>&1
    done
  done
  python benchmarks/collect_records.py "$OUT/teachers.json" runs/teachers-*/*.json
  tail -n 3 runs/teachers.log
) > "$OUT/teachers.log" 2>&1 &
wait
tail -n 4 "$OUT"/b8.log "$OUT"/c16.log "$OUT"/teachers.log
