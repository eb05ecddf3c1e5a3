#!/usr/bin/env bash
# Issue 3 probe: does BiT's code's 1-bit α init (QuantInit.alpha_init="wide": 2·mean|x|,
# 4·mean|x|, a wider straight-through window) train a better W1A1 student than the paper's eq. 6/8
# ("optimal", the default)? Usage (device): EPOCHS=2 bash benchmarks/gpu_alpha_init.sh OUTDIR
VARIANTS='optimal:--alpha-init optimal|wide:--alpha-init wide' RUNS=bit:1-1-1 PROBE_DIR=runs/alpha \
  exec bash "$(dirname "$0")/gpu_probe.sh" "$@"
