#!/usr/bin/env bash
# Issue 26 on one GPU call: 1-1-1 students whose first layers run wider activations
# (QuantConfig.early_layers / early_act_bits), on the pair control (gpu_pairs.sh), on MRPC without
# augmentation and on SST-2 (no loss there?), all at once. Resumable on a warm machine (each part is).
#   EARLY='4 32' SEEDS='42 43' bash benchmarks/gpu_early.sh OUTDIR      (carry .devdata)
# Everything comes back as OUTDIR/early.tgz (records + logs) and OUTDIR/summary.txt.
set -u
OUT=${1:-runs/gpu}
mkdir -p "$OUT" runs
T=${EARLY_TIMEOUT:-480}
probes=""
for b in ${EARLY:-4 32}; do
  probes="$probes;early2a$b|--runs bit:1-1-1 --epochs ${PAIR_EPOCHS:-10} --quant early_layers=2,early_act_bits=$b"
done
PAIRS_TIMEOUT=$T SEEDS="${SEEDS:-42 43}" PROBES="${probes#;}" bash benchmarks/gpu_pairs.sh "$OUT/pairs" > "$OUT/pairs.log" 2>&1 &
for b in ${EARLY:-4 32}; do
  for s in ${SEEDS:-42 43}; do
    tasks=mrpc; [ "$s" = "${SEEDS%% *}" ] && [ "$b" = "${SST2_BITS:-4}" ] && tasks=mrpc,sst2
    SKIP_TESTS=1 SKIP_SPEED=1 TASKS=$tasks MRPC_RUNS="bit:1-1-1" SST2_RUNS="bit:1-1-1" SST2_EPOCHS=${SST2_EPOCHS:-3} \
      EXTRA_ARGS="--seed $s --quant early_layers=2,early_act_bits=$b ${EARLY_EXTRA:-}" GLUE_OUT=runs/early-a$b-s$s GLUE_TIMEOUT=$T \
      bash benchmarks/gpu_glue.sh "$OUT/glue-a$b-s$s" > "$OUT/glue-a$b-s$s.log" 2>&1 &
  done
done
wait
python - "$OUT" > "$OUT/summary.txt" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for f in sorted(out.glob("glue-*/records.json")):
    for r in json.loads(f.read_text()):
        print(f.parent.name, r.get("task"), r.get("method"), r.get("schedule"), r.get("seed"), r.get("best"), r.get("final"), r.get("wall_s"))
p = out / "pairs" / "pair_records.json"
if p.exists():
    for r in json.loads(p.read_text()):
        print("pairs", r["name"], r["seed"], r["best"], r["final"], r.get("wall_s"), r["duplicate_heads"]["student"])
PY
cat "$OUT/summary.txt"
(cd "$OUT" && tar czf early.tgz --exclude early.tgz --exclude summary.txt . && find . -mindepth 1 ! -name early.tgz ! -name summary.txt -delete)
