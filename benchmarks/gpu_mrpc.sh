#!/usr/bin/env bash
# Issues 22 and 26 on one GPU call: MRPC with augmentation under the pair default (gpu_augment.sh: bit
# seeds 42/43, bibert, baseline), beside paired MRPC probes without augmentation (gpu_probe.sh: one
# teacher per seed, every variant on it), all at once. Resumable: the same command on the still-warm
# machine continues every run (checkpoints stay in runs/).
#   VARIANTS='ref:|row:--quant weight_scale=row' RUNS='bit:1-1-2,1-1-1' SEEDS='42 43' bash benchmarks/gpu_mrpc.sh OUTDIR
# AUG=0 skips the augmented runs, VARIANTS='' the probes. EPOCHS: a probe stage's epochs (10).
# Processes: 3 augmented + one per variant and seed; 7 ran one out of memory on an H100 (80 GB): keep to 6 there.
# Carry .devdata (minilm-l6-h384-fp16, glue/MRPC, aug.tgz holding aug/mrpc.tsv).
# Everything comes back as OUTDIR/mrpc.tgz (records, logs, eval histories) and OUTDIR/summary.txt.
# TASK=qnli runs the same seeded probes on the QNLI-style pairs benchmarks/squad_pairs.py builds from SQuAD
# (carry .devdata/glue/QNLI; AUG=0, there is no augmented file): OUTDIR/qnli.tgz.
set -u
TASK=${TASK:-mrpc}
OUT=${1:?usage: bash benchmarks/gpu_mrpc.sh OUTDIR}
mkdir -p "$OUT" runs
T0=$(date +%s)
DEADLINE=${DEADLINE:-540}
if [ "${AUG:-1}" != 0 ] && [ "$TASK" = mrpc ]; then
  AUG_TASKS=mrpc SHIP=0 AUG_EPOCHS=${AUG_EPOCHS:-2} DEADLINE=$(( DEADLINE - 10 )) \
    bash benchmarks/gpu_augment.sh runs/mrpc-aug-out > runs/mrpc-aug.log 2>&1 &
fi
if [ -n "${VARIANTS:-}" ]; then
  for s in ${SEEDS:-42}; do
    TASK=$TASK TEACHER_EPOCHS=3 EVAL_EVERY=${EVAL_EVERY:-100} EPOCHS=${EPOCHS:-10} EVALS=0 GLUE_TIMEOUT=$(( DEADLINE - 20 )) \
      END_AT=$(( T0 + DEADLINE - 20 )) PROBE_DIR=runs/probe-$TASK-s$s EXTRA_ARGS="--seed $s" \
      RUNS="${RUNS:-bit:1-1-2,1-1-1}" VARIANTS="$VARIANTS" \
      bash benchmarks/gpu_probe.sh runs/$TASK-out/s$s > runs/$TASK-probe-s$s.log 2>&1 &
  done
fi
while [ $(( DEADLINE - ($(date +%s) - T0) )) -gt 8 ] && [ -n "$(jobs -rp)" ]; do sleep 5; done
python - runs $TASK > "$OUT/summary.txt" <<'PY'
import json, pathlib, sys
runs, task = pathlib.Path(sys.argv[1]), sys.argv[2]
files = sorted(runs.glob(f"probe-{task}-s*/*/{task}.json")) + sorted(runs.glob("glue-aug*/mrpc.json")) \
    + sorted(runs.glob("glue-aug*/p*/mrpc.json"))
for f in files:
    for r in json.loads(f.read_text()):
        print(str(f.parent.relative_to(runs)), r.get("method"), r.get("schedule"), r.get("seed"),
              r.get("best"), r.get("final"), r.get("teacher_metric"), r.get("wall_s"))
PY
tar czf "$OUT/$TASK.tgz" runs/$TASK-*.log runs/$TASK-out runs/mrpc-aug-out runs/logs runs/probe-$TASK-*/*.log \
  $(find runs/probe-$TASK-* runs/glue-aug* \( -name '*.json' -o -name metrics.jsonl \) 2>/dev/null) 2>/dev/null
cat "$OUT/summary.txt"
