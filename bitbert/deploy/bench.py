"""``bitbert bench``: the packed engine against PyTorch FP32 and dynamic int8, and ONNX Runtime FP32
and dynamic int8 (:mod:`bitbert.deploy.ort_baseline`, when onnxruntime is installed), on the CPU.

Latency (batch 1) and throughput (larger batches) at a fixed sequence length, at 1 thread and at
all threads, plus the binary GEMM kernel alone against the measured popcount peak
(:mod:`bitbert.deploy.peak`). Every timing is the median of ``repeats`` calls after one warm-up call; the
individual times, the load average before and after, the command line, CPU and library versions
are recorded with the results. Without a packed model, a random model of the requested shape is
binarized with BiT (1-1-1, or the requested bits, e.g. 1-1-2), calibrated on random tokens and exported to a temporary file; the FP32
and int8 baselines are random models of the same shape (speed does not depend on the weights).
"""
from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, int]] = {
    "bert-base": {},
    "minilm-l6": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=1000),
}


def timed(fn: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """Median / min wall time of ``repeats`` calls of fn after one warm-up call."""
    fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


def random_classifier(shape: str | dict[str, Any], architecture: str = "BertForSequenceClassification", seed: int = 0):
    """A randomly initialised FP32 sequence classifier of a named shape (or a config dict)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    if isinstance(shape, str):
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}; choose one of {list(SHAPES)}")
        return transformers.BertForSequenceClassification(transformers.BertConfig(num_labels=2, **SHAPES[shape])).eval()
    cfg = {k: v for k, v in shape.items() if k not in ("architectures", "transformers_version", "bitbert")}
    config = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    return getattr(transformers, architecture)(config).eval()


def export_random_bit(fp32, path: str | Path, seq_len: int, seed: int = 0, bits: str = "1-1-1",
                      quant_overrides: dict[str, Any] | None = None) -> Path:
    """Binarize a copy of ``fp32`` with BiT at E-W-A ``bits`` (and `QuantConfig` ``quant_overrides``, e.g.
    wider first layers), calibrate it on random tokens, export it."""
    import torch

    from ..quant.calibration import calibrate
    from ..quant.convert import binarize
    from ..quant.schedule import stage_config
    from .packing import export

    student = binarize(copy.deepcopy(fp32), stage_config("bit", bits, quant_overrides))
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, student.config.vocab_size, (2, seq_len), generator=g)
    calibrate(student, [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}])
    return export(student.eval(), path)


def _environment(argv: Sequence[str]) -> dict[str, Any]:
    import numba
    import numpy

    from .peak import cpu_name

    versions = {"python": platform.python_version(), "numpy": numpy.__version__, "numba": numba.__version__}
    try:
        import torch

        versions["torch"] = torch.__version__
    except ImportError:
        pass
    return {"command": " ".join(["bitbert", *argv]) if argv else " ".join(sys.argv),
            "hardware": {"cpu": cpu_name(), "cores": os.cpu_count(), "numba_threads": numba.config.NUMBA_NUM_THREADS},
            "versions": versions, "load_average_before": os.getloadavg()}


def _gemm_rows(config: dict[str, Any], seq_len: int, threads: Sequence[int], seconds: float) -> list[dict[str, Any]]:
    """Each distinct encoder-linear GEMM of one sequence (M = seq_len) against the popcount peak."""
    from .peak import gemm_efficiency, measure_popcount_peak

    hidden, inter = int(config["hidden_size"]), int(config["intermediate_size"])
    rows = []
    for t in threads:
        peak = measure_popcount_peak(seconds=seconds, threads=t)["gbit_ops_per_s"]
        for n, k in ((hidden, hidden), (inter, hidden), (hidden, inter)):
            rows.append(gemm_efficiency(seq_len, n, k, threads=t, peak=peak, seconds=seconds, prepacked=True))
    return rows


def _table(rows: list[dict[str, Any]], gemm: list[dict[str, Any]], info: dict[str, Any]) -> str:
    lines = [f"{info['model']['description']}, seq {info['model']['seq_len']}; {info['hardware']['cpu']}, "
             f"{info['hardware']['cores']} cores; medians of {info['repeats']} calls; milliseconds per batch.", "",
             "| threads | batch | packed engine | seq/s | PyTorch FP32 | PyTorch int8 dyn | ORT FP32 | ORT int8 dyn "
             "| vs PyTorch FP32 | vs ORT int8 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ms = lambda key: f"{r[key]['median_s'] * 1e3:.1f}" if key in r else "-"  # noqa: E731
        ratio = lambda key: f"{r[key]['median_s'] / r['engine']['median_s']:.2f}x" if key in r else "-"  # noqa: E731
        lines.append(f"| {r['threads']} | {r['batch']} | {ms('engine')} | {r['engine_seq_per_s']:.1f} | {ms('fp32')} | "
                     f"{ms('int8')} | {ms('ort_fp32')} | {ms('ort_int8')} | {ratio('fp32')} | {ratio('ort_int8')} |")
    lines += [f"\n{note}" for note in info.get("skipped", [])]
    if "phases" in info:
        from .engine.profile import phase_table

        lines += ["", f"Where the engine's time goes (1 thread, batch {min(r['batch'] for r in rows)}, profiled calls):",
                  "", phase_table(info["phases"])]
    if gemm:
        lines += ["", "| GEMM M x N x K | threads | Gbit-MAC/s | popcount peak | fraction |", "|---|---|---|---|---|"]
        lines += [f"| {g['M']} x {g['N']} x {g['K']} | {g['threads']} | {g['gbit_mac_per_s']:.0f} | "
                  f"{g['peak_gbit_ops_per_s']:.0f} | "
                  + (f"{g['fraction_of_peak']:.0%} |" if g["fraction_of_peak"] is not None else "too noisy to measure |")
                  for g in gemm]
    return "\n".join(lines)


def _torch_baselines(rows: list[dict[str, Any]], fp32, inputs: dict[int, Any], repeats: int) -> None:
    """Add FP32 and dynamic-int8 (torch.ao quantize_dynamic on every Linear) timings to each row."""
    import warnings

    import torch
    from torch import nn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized-tensor deprecation notices
        int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {nn.Linear}, dtype=torch.qint8)
    for row in rows:
        torch.set_num_threads(row["threads"])
        ids = torch.from_numpy(inputs[row["batch"]])
        with torch.inference_mode():
            row["fp32"] = timed(lambda: fp32(input_ids=ids), repeats)
            row["int8"] = timed(lambda: int8(input_ids=ids), repeats)
        row["speedup_vs_fp32"] = row["fp32"]["median_s"] / row["engine"]["median_s"]
        row["speedup_vs_int8"] = row["int8"]["median_s"] / row["engine"]["median_s"]


def run_bench(model: str | Path | None = None, shape: str = "bert-base", batch_sizes: Sequence[int] = (1, 32),
              seq_len: int = 128, threads: Sequence[int] | None = None, repeats: int = 5,
              torch_baselines: bool = True, ort_baselines: bool = True, gemm_seconds: float = 0.5, out: str | Path | None = None,
              argv: Sequence[str] | None = None, bits: str = "1-1-1",
              quant_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); returns the record and writes it to ``out``."""
    import numba
    import numpy as np

    from .engine import load_packed

    from .engine.threads import idle_threads

    start = time.time()
    default_threads = idle_threads(numba.config.NUMBA_NUM_THREADS)  # what a default engine would use now
    info = _environment(sys.argv[1:] if argv is None else argv)
    threads = sorted(set(threads or (1, numba.config.NUMBA_NUM_THREADS)))
    fp32 = None
    with tempfile.TemporaryDirectory() as tmp:
        if model is None:
            fp32 = random_classifier(shape)
            path = export_random_bit(fp32, Path(tmp) / f"{shape}-bit-{bits}.bitbert", seq_len, bits=bits,
                                     quant_overrides=quant_overrides)
            description = f"random {shape}-shaped BertForSequenceClassification, BiT {bits}"
            if quant_overrides:
                description += " " + ",".join(f"{k}={v}" for k, v in quant_overrides.items())
        else:
            path = Path(model)
            description = str(path)
        engine = load_packed(path)
        size = path.stat().st_size
    info.update(model={"description": description, "packed_bytes": size, "seq_len": seq_len,
                       "layers": engine.config["num_hidden_layers"], "hidden": engine.config["hidden_size"],
                       "quant": engine.quant.label + " " + engine.quant.preset},
                repeats=repeats)
    if seq_len > engine.max_length:
        raise ValueError(f"seq_len {seq_len} exceeds the model's maximum {engine.max_length}")
    rng = np.random.default_rng(0)
    inputs = {batch: rng.integers(1, engine.vocab_size, (batch, seq_len)) for batch in batch_sizes}
    # The engine (and the GEMMs) first, PyTorch after: PyTorch's OpenMP threads keep spinning after
    # each call and would steal the cores from numba's.
    rows = []
    for t in threads:
        engine.threads = t
        for batch in batch_sizes:
            ids = inputs[batch]
            row: dict[str, Any] = {"threads": t, "batch": batch, "seq_len": seq_len,
                                   "engine": timed(lambda: engine.logits(ids), repeats)}
            row["engine_seq_per_s"] = batch / row["engine"]["median_s"]
            rows.append(row)
    from .engine.profile import profile_phases

    engine.threads = 1
    info["phases"] = profile_phases(engine, inputs[min(batch_sizes)], repeats)  # 1 thread, smallest batch
    info["hardware"]["numba_threading_layer"] = numba.threading_layer()
    info["default_threads_at_start"] = default_threads
    gemm = _gemm_rows(engine.config, seq_len, threads, gemm_seconds) if gemm_seconds > 0 else []
    if torch_baselines:
        fp32 = fp32 if fp32 is not None else random_classifier(engine.config, engine.architecture)
        _torch_baselines(rows, fp32, inputs, repeats)
        if ort_baselines:
            from .ort_baseline import add_ort_baselines, missing

            if (why := missing()) is None:
                add_ort_baselines(rows, fp32, inputs, repeats, seq_len, timed)
            else:
                info["skipped"] = [why]
    info.update(results=rows, gemm=gemm, load_average_after=os.getloadavg(), wall_s=time.time() - start)
    info["table"] = _table(rows, gemm, info)
    if out is not None:
        from ..core.atomic import atomic_write

        atomic_write(out, lambda p: p.write_text(json.dumps(info, indent=1)))
    return info
