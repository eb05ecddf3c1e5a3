#!/usr/bin/env bash
# Issue 3 probe, one GPU call: does BiT's code's 1-bit α init (QuantConfig.alpha_init="wide":
# 2·mean|x|, 4·mean|x|, a wider straight-through window) train a better W1A1 student than the
# paper's eq. 6/8 ("optimal", the default)? One SST-2 teacher, then one-step bit 1-1-1 with each
# init in parallel. Usage (device): EPOCHS=2 bash benchmarks/gpu_alpha_init.sh OUTDIR. Back here:
#   python benchmarks/merge_results.py OUTDIR/records.json --call N --note "..."
set -u
OUT=${1:-runs/gpu}
mkdir -p "$OUT" runs
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false BITBERT_CACHE=runs/cache
R=runs/alpha
common="--task sst2 --model .devdata/minilm-l6-h384-fp16 --data-dir .devdata/glue/SST-2 --epochs ${EPOCHS:-2}
  --teacher-epochs 1 --batch-size 32 --eval-every 250 --resume ${EXTRA_ARGS:-}"
T=${GLUE_TIMEOUT:-240}
mkdir -p $R/optimal $R/wide/sst2
timeout $T python benchmarks/run_glue.py $common --out $R/optimal --runs "" > $R/teacher.log 2>&1
ln -sfn "$PWD/$R/optimal/sst2/teacher" $R/wide/sst2/teacher  # one teacher for both
for init in optimal wide; do
  timeout $T python benchmarks/run_glue.py $common --alpha-init $init --out $R/$init --runs bit:1-1-1 > $R/$init.log 2>&1 &
done
wait
python - "$OUT/records.json" $R/*/sst2.json <<'PY'
import json, sys
recs = [dict(r, records_file=f) for f in sys.argv[2:] for r in json.load(open(f))]
json.dump(recs, open(sys.argv[1], "w"), indent=1)
print([(r["method"], r.get("alpha_init"), round(r["best"], 1), round(r["final"], 1)) for r in recs])
PY
tar czf "$OUT/runs.tgz" $R/*.log $(find $R -name metrics.jsonl -o -name progress.json -o -name run.json) 2>/dev/null
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null
