#!/usr/bin/env bash
# Issue 22 item 1: a masked-LM head for the MiniLM-L6 teacher (augmentation candidates in its vocabulary),
# trained on the corpus two ways side by side on one GPU: the head alone (encoder frozen) and the head with
# the encoder; each model's top-15 masked-word recall on held-out corpus text (bitbert.training.mlm_head).
# Usage (device, from the repository root; carry .devdata with minilm-l6-h384-fp16/ and corpus/english.txt.xz):
#   bash benchmarks/gpu_mlm_head.sh OUTDIR
# Resumable: runs live in $R (default runs/mlm-head, kept on a warm machine); the same command continues them.
# Writes OUTDIR/{gpu.txt, mlm_head.json (both reports, recall included), logs.txt} and the better model as
# OUTDIR/mlm-minilm-l6.tar.part-* (fp16 safetensors + tokenizer, split under 15 MiB):
#   cat mlm-minilm-l6.tar.part-* | tar -x   # -> mlm-minilm-l6/, an ordinary BertForMaskedLM directory
set -u
NEED=${CORPUS:-.devdata/corpus/english.txt.xz} source benchmarks/require_devdata.sh
OUT=${1:-runs/gpu-mlm-head}
R=${MLM_RUNS:-runs/mlm-head}
M=${MODEL:-.devdata/minilm-l6-h384-fp16}
C=${CORPUS:-.devdata/corpus/english.txt.xz}
mkdir -p "$OUT" "$R"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" >> "$OUT/gpu.txt"
# 128 sequences x 128 tokens a step, bf16; every 50th block held out (loss, accuracy and recall).
COMMON="--model $M --corpus $C --seq-len ${SEQ_LEN:-128} --batch-size ${BATCH:-128} --holdout-every ${HOLDOUT:-50} --heldout-sequences 512 \
  --recall-texts ${RECALL_TEXTS:-2000} --eval-every ${EVAL_EVERY:-500} --num-workers 1 --resume"
timeout -k 10 "${HEAD_TIMEOUT:-420}" python -m bitbert.cli mlm-head $COMMON --out "$R/head" --lr 1e-3 \
  --max-steps "${HEAD_STEPS:-3000}" --max-seconds "${HEAD_SECONDS:-300}" > "$R/head.log" 2>&1 &
timeout -k 10 "${ENC_TIMEOUT:-450}" python -m bitbert.cli mlm-head $COMMON --out "$R/encoder" --train-encoder --lr 2e-4 \
  --max-steps "${ENC_STEPS:-6000}" --max-seconds "${ENC_SECONDS:-330}" > "$R/encoder.log" 2>&1 &
wait
python - "$R" "$OUT" <<'PY'
import json, sys
from pathlib import Path
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
reports = {v: json.loads((runs / v / "report.json").read_text()) for v in ("head", "encoder")
           if (runs / v / "report.json").is_file()}
(out / "mlm_head.json").write_text(json.dumps(reports, indent=2))
done = {v: r for v, r in reports.items() if r.get("recall")}
best = max(done, key=lambda v: done[v]["recall"]["mlm"]["recall_at_15"]) if done else None
print("recall@15:", {v: r["recall"]["mlm"]["recall_at_15"] for v, r in done.items()}, "-> shipping", best)
if best:
    import torch
    from transformers import AutoTokenizer, BertForMaskedLM
    src = runs / best / "model"
    dst = runs / "mlm-minilm-l6"
    BertForMaskedLM.from_pretrained(src, dtype=torch.float16).save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    (dst / "recall.json").write_text(json.dumps(done[best]["recall"], indent=2))
PY
if [ -d "$R/mlm-minilm-l6" ]; then
  tar -C "$R" -cf - mlm-minilm-l6 | split -b 15M - "$OUT/mlm-minilm-l6.tar.part-"
fi
for f in "$R"/*.log; do echo "== $f"; grep -v -e Warn -e '^Loading' -e 'Writing model' "$f" | tail -n 30; done > "$OUT/logs.txt"
ls -la "$OUT"
