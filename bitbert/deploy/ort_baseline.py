"""ONNX Runtime baselines for ``bitbert bench``: the FP32 classifier exported with
``torch.onnx.export`` and run by ONNX Runtime as is (FP32) and after ``quantize_dynamic`` (QInt8
weights, dynamic int8 activations): the runtime most BERT deployments on CPU use. All graph
optimizations on, intra-op threads set to the bench's thread count. Optional: needs
``pip install "bitbert[bench]"`` (onnxruntime and onnx)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

INSTALL_HINT = 'pip install "bitbert[bench]"  (onnxruntime, onnx)'


def missing() -> str | None:
    """None when the ONNX Runtime baselines can run, else what is missing and how to install it."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        from onnxruntime.quantization import quantize_dynamic  # noqa: F401
    except ImportError as e:
        return f"ONNX Runtime columns skipped ({e.name} is not installed): {INSTALL_HINT}"
    return None


def export_onnx(fp32, folder: str | Path, seq_len: int) -> dict[str, Path]:
    """FP32 and dynamic-int8 ONNX files of ``fp32`` (input_ids -> logits, dynamic batch and length)."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder = Path(folder)
    paths = {"fp32": folder / "model.onnx", "int8": folder / "model.int8.onnx"}
    ids = torch.ones(1, seq_len, dtype=torch.long)

    class Logits(torch.nn.Module):  # a plain tensor out, not the transformers output object
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids):
            return self.model(input_ids=input_ids).logits

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python branches on shapes
        torch.onnx.export(Logits(fp32.eval()), (ids,), str(paths["fp32"]), input_names=["input_ids"],
                          output_names=["logits"], dynamic_axes={"input_ids": {0: "batch", 1: "length"}},
                          opset_version=17, dynamo=False)
        quantize_dynamic(str(paths["fp32"]), str(paths["int8"]), weight_type=QuantType.QInt8)
    return paths


def session(path: Path, threads: int):
    """An ONNX Runtime CPU session with all graph optimizations and ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def add_ort_baselines(rows: list[dict[str, Any]], fp32, inputs: dict[int, Any], repeats: int, seq_len: int,
                      timed) -> None:
    """Add ``ort_fp32`` and ``ort_int8`` timings (and ratios to the engine) to each bench row."""
    import tempfile

    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        paths = export_onnx(fp32, tmp, seq_len)
        for threads in sorted({r["threads"] for r in rows}):
            sessions = {k: session(p, threads) for k, p in paths.items()}
            for row in (r for r in rows if r["threads"] == threads):
                feed = {"input_ids": np.ascontiguousarray(inputs[row["batch"]], dtype=np.int64)}
                for kind, sess in sessions.items():
                    row[f"ort_{kind}"] = timed(lambda: sess.run(None, feed), repeats)
                    row[f"speedup_vs_ort_{kind}"] = row[f"ort_{kind}"]["median_s"] / row["engine"]["median_s"]
