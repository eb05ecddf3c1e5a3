#!/usr/bin/env bash
# Paired probe on one GPU call: one teacher (SST-2 unless TASK=mrpc|cola|qnli), then the same runs under each
# variant's extra run_glue.py arguments, in parallel, so the variants differ only in what is being probed.
#   VARIANTS='name:ARGS|name:ARGS' RUNS='bit:1-1-1' EPOCHS=2 PROBE_DIR=runs/probe bash benchmarks/gpu_probe.sh OUTDIR
# TEACHER_EPOCHS (1), EVAL_EVERY (250); END_AT (epoch seconds) caps the variants' time after the teacher.
# e.g. the stage hand-over: VARIANTS='fresh:|inherit:--inherit-quantizers' RUNS='bit:1-1-2,1-1-1' EPOCHS=3
# A variant's leading NAME=value words are its environment: 'w4:FP_LAYERS=0,1 WEIGHT_BITS=4' runs it
# through fp_weight_layers.py (4-bit weights in layers 1-2), 'n:NOISE=0.15' through token_noise.py.
# MODEL=.devdata/minilm-l3-h384-fp16 probes another base model (carry it, with .devdata/glue/SST-2).
# Resumable on a warm machine (--resume). Also writes OUTDIR/NAME.bitbert (each variant's last model) and
# OUTDIR/evals.jsonl (its dev metrics: PyTorch fp32 on GPU and CPU, the packed engine; EVALS=0 skips). Back here:
#   python benchmarks/merge_results.py OUTDIR/records.json --call N --note "..."  (--cut for cut runs)
set -u
TASK=${TASK:-sst2}
case $TASK in sst2) D=SST-2 ;; mrpc) D=MRPC ;; cola) D=CoLA ;; qnli) D=QNLI ;;  # qnli: benchmarks/squad_pairs.py's
  *) echo "TASK must be sst2, mrpc, cola or qnli, got $TASK" >&2; exit 2 ;; esac
NEED=.devdata/glue/$D/dev.tsv source benchmarks/require_devdata.sh
OUT=${1:-runs/gpu}
mkdir -p "$OUT" runs
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false BITBERT_CACHE=runs/cache
R=${PROBE_DIR:-runs/probe}
common="--task $TASK --model ${MODEL:-.devdata/minilm-l6-h384-fp16} --data-dir .devdata/glue/$D --epochs ${EPOCHS:-2}
  --teacher-epochs ${TEACHER_EPOCHS:-1} --batch-size 32 --eval-every ${EVAL_EVERY:-250} --resume ${EXTRA_ARGS:-}"
T=${GLUE_TIMEOUT:-240}
IFS='|' read -ra variants <<< "${VARIANTS:?e.g. VARIANTS='fresh:|inherit:--inherit-quantizers'}"
first=${variants[0]%%:*}
mkdir -p $R/$first
timeout $T python benchmarks/run_glue.py $common --out $R/$first --runs "" > $R/teacher.log 2>&1
[ -n "${END_AT:-}" ] && T=$(( END_AT - $(date +%s) ))
for v in "${variants[@]}"; do
  name=${v%%:*}; read -ra args <<< "${v#*:}"
  envs=(); script=benchmarks/run_glue.py  # leading NAME=value words are the variant's environment;
  while [ ${#args[@]} -gt 0 ] && [[ ${args[0]} =~ ^[A-Z_]+= ]]; do  # FP_LAYERS or NOISE make it a probe
    envs+=("${args[0]}"); args=("${args[@]:1}")
    case ${envs[-1]} in FP_LAYERS=*) script=benchmarks/fp_weight_layers.py ;; NOISE=*) script=benchmarks/token_noise.py ;; esac
  done
  mkdir -p $R/$name/$TASK
  [ "$name" != "$first" ] && ln -sfn "$(cd $R/$first/$TASK && pwd)/teacher" $R/$name/$TASK/teacher  # one teacher for all
  timeout $T env "${envs[@]}" python $script $common --out $R/$name --runs "${RUNS:-bit:1-1-1}" "${args[@]}" > $R/$name.log 2>&1 &  # args last: a variant may override --runs
done
wait
# the records and logs before the evaluations: a call cut by its limit during them still returns these
python benchmarks/collect_records.py "$OUT/records.json" $R/*/$TASK.json --print
tar czf "$OUT/runs.tgz" $R/*.log $(find $R -name metrics.jsonl -o -name progress.json -o -name run.json -o -name report.json) 2>/dev/null
[ "${EVALS:-1}" = 0 ] && exit 0
for v in "${variants[@]}"; do  # each variant's last hand-over model as a packed file, and its dev metrics
  name=${v%%:*}                 # in PyTorch fp32 on the GPU and on the CPU, and on the bitwise engine
  last=$(ls -d $R/$name/$TASK/*/stage*/model 2>/dev/null | tail -1)
  [ -z "$last" ] && continue
  python -m bitbert.cli export "$last" "$OUT/$name.bitbert" > /dev/null
  for where in "$last --device cuda" "$last --device cpu" "$OUT/$name.bitbert"; do
    args="$where --task $TASK --data-dir .devdata/glue/$D"
    python -m bitbert.cli evaluate $args --out $R/eval.json > /dev/null && python -c "import json, sys
print(json.dumps({'variant': sys.argv[1], 'command': 'bitbert evaluate ' + sys.argv[2], **json.load(open(sys.argv[3]))}))" \
      "$name" "$args" $R/eval.json >> "$OUT/evals.jsonl"
  done
done
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null
