#!/usr/bin/env bash
# Issue 3 results on one GPU: CUDA-graph tests, distillation speed, then SST-2 / MRPC / CoLA in
# parallel processes. Resumable: a second call on the same (warm) machine continues the runs.
# Usage (device): bash benchmarks/gpu_glue.sh OUTDIR   (expects .devdata/ with the MiniLM-L6 model
# and glue/{SST-2,MRPC,CoLA} copied from ../shared; carry .devdata). Back here, add the returned records:
#   python benchmarks/merge_results.py FILES_AT/records.json --call N --note "..." && python benchmarks/tables.py
# and the runs a limit cut (from the unpacked runs.tgz): merge_results.py --cut RUNS_DIR --call N --note "..."
set -u
source benchmarks/require_devdata.sh
OUT=${1:-runs/gpu}
mkdir -p "$OUT" runs
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false BITBERT_CACHE=runs/cache
M=.devdata/minilm-l6-h384-fp16
G=.devdata/glue
[ -z "${SKIP_TESTS:-}" ] && timeout 60 python -m pytest -q tests/test_graphs.py 2>&1 | tail -3 | tee "$OUT/gpu_tests.txt"
if [ -z "${SKIP_SPEED:-}" ] && [ ! -f runs/speed.done ]; then
  timeout 90 python benchmarks/distill_speed.py --model $M --data-dir $G/SST-2 --out "$OUT/distill_speed.json" \
    --batch-sizes ${SPEED_BATCHES:-32,128} --steps 100 --graphs on,off 2>&1 | grep -v Warn | tail -6
  touch runs/speed.done
fi
# Runs live in $R (GLUE_OUT): a run of other settings (e.g. another seed) on a warm machine needs its own.
R=${GLUE_OUT:-runs/glue}
L=$R/logs  # per runs folder: several invocations (other settings) can run at once
mkdir -p $L
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee $L/gpu.log  # in runs.tgz
T=${GLUE_TIMEOUT:-420}  # per process: the teacher, then each run group
B=${BATCH:-32}
# One process per task (they share the GPU). TASKS picks tasks; SST2_RUNS / MRPC_RUNS / COLA_RUNS pick
# runs (run_glue.py --runs, e.g. "bit:1-1-2,1-1-1;baseline:1-1-1"); '|' splits a task's runs into
# parallel processes that share one teacher (group k>0 writes $R/p{k}/). Checkpoints survive
# only while the machine is warm. EXTRA_ARGS go to every run_glue.py (a CPU smoke test: "--max-steps 4"),
# SST2_ARGS / MRPC_ARGS / COLA_ARGS to that task's only.
run_task() {  # task dir epochs teacher_epochs eval_every runs
  local own="${1^^}_ARGS"  # e.g. COLA_ARGS="--seed 44": one task's own extra arguments
  local common="--task $1 --model $M --data-dir $G/$2 --epochs $3 --teacher-epochs $4 --batch-size $B --eval-every $5 --resume ${EXTRA_ARGS:-} ${!own:-}"
  local groups i o
  IFS='|' read -ra groups <<< "$6"
  (
    timeout $T python benchmarks/run_glue.py $common --out $R --runs "" >> $L/$1.log 2>&1  # the teacher
    for i in "${!groups[@]}"; do
      o=$R
      if [ "$i" -gt 0 ]; then
        o=$R/p$i; mkdir -p $o/$1; ln -sfn "$PWD/$R/$1/teacher" $o/$1/teacher
      fi
      timeout $T python benchmarks/run_glue.py $common --out $o --runs "${groups[$i]}" >> $L/$1.$i.log 2>&1 &
    done
    wait
  ) &
  TASK_PIDS+=($!)
}
TASK_PIDS=()
# What comes back ($OUT holds at most 8 files): every process's records merged into records.json
# (each with the file it came from), and one tarball with the record files, the logs and the eval
# history of every run, cut ones included. Refreshed every 10 s, so a call that hits the time limit
# still returns what finished.
save_results() {
  python benchmarks/collect_records.py "$OUT/records.json" $R/*.json $R/p*/*.json 2>/dev/null
  tar czf "$OUT/runs.tgz.tmp" $L/*.log $( { find $R -maxdepth 3 -name '*.json'; find $R -name metrics.jsonl -o -name progress.json -o -name run.json -o -name report.json; } | sort -u) 2>/dev/null \
    && mv "$OUT/runs.tgz.tmp" "$OUT/runs.tgz"
}
(while sleep 10; do save_results; done) &
COPIER=$!
TASKS=${TASKS:-mrpc,cola,sst2}
[[ ,$TASKS, == *,mrpc,* ]] && run_task mrpc MRPC ${MRPC_EPOCHS:-10} ${MRPC_TEACHER_EPOCHS:-3} 100 "${MRPC_RUNS:-all}"
[[ ,$TASKS, == *,cola,* ]] && run_task cola CoLA ${COLA_EPOCHS:-10} ${COLA_TEACHER_EPOCHS:-3} 200 "${COLA_RUNS:-all}"
[[ ,$TASKS, == *,sst2,* ]] && run_task sst2 SST-2 ${SST2_EPOCHS:-2} ${SST2_TEACHER_EPOCHS:-1} 500 "${SST2_RUNS:-all}"
wait "${TASK_PIDS[@]}"  # not a bare wait: the copier never ends
kill $COPIER 2>/dev/null
save_results
grep -h '"task"' $L/*.log | tail -n 30
tail -n 2 $L/*.log
