#!/usr/bin/env bash
# The sentence-pair control on one GPU call (benchmarks/pair_control.py): one teacher per pair variant,
# then every probe in parallel, two seeds each. Resumable on a warm machine.
#   PROBES='name|ARGS;name|ARGS' SEEDS='42 43' VARIANTS='identity edit' bash benchmarks/gpu_pairs.sh OUTDIR
# ARGS are pair_control.py arguments (--runs, --quant, --loss, --lr, --epochs ...). Needs .devdata/ (carry it).
set -u
NEED=.devdata/glue/SST-2/train.tsv source benchmarks/require_devdata.sh
OUT=${1:-runs/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
R=${PAIRS_DIR:-runs/pairs}
mkdir -p "$(dirname "$R")"  # the logs sit beside $R
common="--model ${MODEL:-.devdata/minilm-l6-h384-fp16} --sentences .devdata/glue/SST-2/train.tsv --out $R
  --train ${TRAIN:-2000} --dev ${DEV:-500} --batch-size ${BATCH:-8} ${EXTRA_ARGS:-}"
T=${PAIRS_TIMEOUT:-420}
for v in ${VARIANTS:-identity}; do  # the teachers first: every probe of a variant shares one
  timeout $T python benchmarks/pair_control.py $common --variant $v --runs > $R-teacher-$v.log 2>&1
done
IFS=';' read -ra probes <<< "${PROBES:?e.g. PROBES='default|--runs bit:1-1-32;fpemb|--quant embeddings='}"
for v in ${VARIANTS:-identity}; do
  for p in "${probes[@]}"; do
    name=${p%%|*}; args=${p#*|}
    for seed in ${SEEDS:-42 43}; do
      timeout $T python benchmarks/pair_control.py $common --variant $v --name $name --seed $seed $args \
        > $R-$v-$name-$seed.log 2>&1 &
    done
  done
done
wait
python - "$R/records" "$OUT/pair_records.json" <<'PY'
import json, pathlib, sys
recs = [json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).glob("*.json"))]
pathlib.Path(sys.argv[2]).write_text(json.dumps(recs, indent=1))
for r in recs:
    print(r["variant"], r["name"], r["method"], r["schedule"], r["seed"], r["best"], r["final"], r["wall_s"])
PY
tar czf "$OUT/pair_logs.tgz" $R-*.log 2>/dev/null
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null
