"""CUDA-graph replay of a training step's forward and backward.

A distillation step of a small binary BERT is thousands of tiny kernels (every quantizer is a few
elementwise ops, forward and backward, in teacher and student): eager PyTorch spends 60-90 ms a
step (H100/H200) launching them while the GPU idles. Capturing ``loss_fn(model, batch)`` +
``backward`` once per batch shape and replaying it removes that launch cost without a compiler.

Contract with the caller (``bitbert.training.train.train``):
- gradients live in persistent ``.grad`` tensors allocated before capture, so the replayed
  backward accumulates into them in place: zero them in place between steps
  (``optimizer.zero_grad(set_to_none=False)``) and run clipping and the optimizer eagerly;
- the returned loss is a tensor of the graph's memory, overwritten by the next replay;
- a capture that fails (a host sync in the step, an op CUDA graphs cannot hold) raises
  :class:`GraphCaptureError`, and the caller continues eagerly.
"""
from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from ..quant.attention import additive_mask

log = logging.getLogger("bitbert")


class GraphCaptureError(RuntimeError):
    """The step could not be captured as a CUDA graph; run it eagerly instead."""


def _device_eager_mask(*args, dtype: torch.dtype = torch.float32, **kwargs):
    """transformers' additive eager mask built from device tensors only: its own ``eager_mask``
    fills with a Python-scalar ``torch.where``, a host-to-device copy that capture refuses."""
    from transformers.masking_utils import sdpa_mask

    kwargs.update(allow_is_causal_skip=False, allow_is_bidirectional_skip=False)
    return additive_mask(sdpa_mask(*args, **kwargs), dtype)


@contextlib.contextmanager
def capture_safe_masks() -> Iterator[None]:
    """While capturing, models with eager attention (a teacher whose attention maps are distilled)
    get :func:`_device_eager_mask`; replays run no Python, so nothing else sees the swap."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    original = ALL_MASK_ATTENTION_FUNCTIONS["eager"]
    ALL_MASK_ATTENTION_FUNCTIONS.register("eager", _device_eager_mask)
    try:
        yield
    finally:
        ALL_MASK_ATTENTION_FUNCTIONS.register("eager", original)


def _shape_key(batch: dict[str, torch.Tensor]) -> tuple:
    return tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(batch.items()))


class GraphedStep:
    """``step(batch) -> loss``: forward + backward of ``loss_fn(model, batch)`` as one CUDA graph per
    batch shape (captured on first sight of the shape, at most ``max_graphs``; other shapes return
    None and the caller runs them eagerly). Dropout stays random: the default CUDA generator is
    registered with every graph."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, dict], torch.Tensor],
                 autocast_dtype: torch.dtype | None = None, max_graphs: int = 48, warmup: int = 2) -> None:
        self.model, self.loss_fn = model, loss_fn
        self.autocast_dtype, self.max_graphs, self.warmup = autocast_dtype, max_graphs, warmup
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, dict[str, torch.Tensor], torch.Tensor]] = {}
        self._grads: list[tuple[nn.Parameter, torch.Tensor]] | None = None

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # cache_enabled=False: autocast's weight-cast cache must not outlive a captured region.
        with torch.autocast("cuda", dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None, cache_enabled=False):
            return self.loss_fn(self.model, batch)

    def _prepare_grads(self, static: dict[str, torch.Tensor]) -> None:
        """Find which parameters get gradients (an eager warm-up step) and give exactly those a
        persistent zero ``.grad``; the others keep None, as in eager training."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        for p in params:
            p.grad = None
        self._loss(static).backward()
        for p in params:
            p.grad = torch.zeros_like(p) if p.grad is not None else None
        self._grads = [(p, p.grad) for p in params if p.grad is not None]

    def _capture(self, batch: dict[str, torch.Tensor]) -> tuple:
        static = {k: v.clone() for k, v in batch.items()}
        saved = {id(p): p.grad.clone() for p in self.model.parameters() if p.grad is not None}
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the capture stream (cuBLAS handles, allocator)
                if self._grads is None:
                    self._prepare_grads(static)
                for _ in range(self.warmup):
                    self._loss(static).backward()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with capture_safe_masks(), torch.cuda.graph(graph):
                loss = self._loss(static)
                loss.backward()
        except Exception as e:  # anything the capture cannot hold: the caller goes eager
            torch.cuda.synchronize()
            frames = traceback.extract_tb(e.__traceback__)[-4:]
            where = "; ".join(f"{Path(f.filename).name}:{f.lineno} {f.line}" for f in frames)
            raise GraphCaptureError(f"{type(e).__name__}: {e} [at {where}]") from e
        finally:
            # Warm-up steps accumulated into the gradients of the step in progress: restore them.
            for p in self.model.parameters():
                if p.grad is None:
                    continue
                if id(p) in saved:
                    p.grad.copy_(saved[id(p)])
                else:
                    p.grad.zero_()
        return graph, static, loss

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        key = _shape_key(batch)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= self.max_graphs:
                return None
            entry = self.graphs[key] = self._capture(batch)
            log.debug("captured CUDA graph %d for %s", len(self.graphs), key)
        graph, static, loss = entry
        if any(p.grad is not g for p, g in self._grads):
            raise RuntimeError("a parameter's .grad was replaced since capture: the graphs write into the "
                               "captured tensors, so zero gradients in place (zero_grad(set_to_none=False))")
        for k, v in batch.items():
            static[k].copy_(v, non_blocking=True)
        graph.replay()
        return loss


def graphs_wanted(setting: str, device: torch.device, num_processes: int) -> bool:
    """``auto``: on for single-process CUDA training (DDP's gradient hooks are not captured)."""
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"cuda_graphs must be auto, on or off; got {setting!r}")
    if setting == "off" or device.type != "cuda":
        return False
    if num_processes > 1:
        if setting == "on":
            log.warning("cuda_graphs=on is ignored under %d processes (DDP); running eagerly", num_processes)
        return False
    return True
