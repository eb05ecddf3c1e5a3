"""Probe: does a student that cannot memorise its training pairs learn a small pair task? Runs
`run_glue.py` with each distillation batch's text tokens replaced, at rate NOISE (0-0.5), by
[MASK] (NOISE_KIND=mask) or by a token drawn from the same batch's texts (NOISE_KIND=batch). Teacher
and student see the same corrupted batch, so the teacher's outputs stay the targets: every epoch is a
fresh perturbation of the data at no cost. The dev set is never corrupted.

    NOISE=0.15 NOISE_KIND=mask PYTHONPATH=. python benchmarks/token_noise.py --task mrpc ... --runs bit:1-1-1

A measurement tool: it patches `DistillLoss.__call__` for this process and names itself in the records.
"""
import os
import sys

import torch

from bitbert.training import distill

try:
    NOISE = float(os.environ["NOISE"])
    KIND = os.environ.get("NOISE_KIND", "mask")
    assert 0 < NOISE <= 0.5 and KIND in ("mask", "batch")
except (KeyError, ValueError, AssertionError):
    raise SystemExit("error: set NOISE to a rate in (0, 0.5] and NOISE_KIND to mask or batch")


def corrupt(batch: dict, rate: float, kind: str, mask_id: int, special: torch.Tensor,
            generator: torch.Generator | None = None) -> dict:
    """``batch`` with a ``rate`` share of its text tokens (attended, not special) replaced."""
    ids = batch["input_ids"]
    text = batch["attention_mask"].bool() & ~torch.isin(ids, special)
    # drawn on the batch's device: a CPU draw copied over is refused under CUDA-graph capture
    hit = text & (torch.rand(ids.shape, generator=generator, device=ids.device) < rate)
    if kind == "mask":
        new = torch.full_like(ids, mask_id)
    else:  # a text token of the same batch, so the replacement is a real word of the task's data
        pool = ids[text]
        new = pool[torch.randint(len(pool), ids.shape, generator=generator, device=ids.device)]
    return {**batch, "input_ids": torch.where(hit, new, ids)}


def install(mask_id: int, special_ids: list[int]) -> None:
    call, on = distill.DistillLoss.__call__, {}  # the special ids, once per device

    def noisy_call(self, student, batch):
        if not student.training:
            return call(self, student, batch)
        device = batch["input_ids"].device
        special = on.setdefault(device, torch.tensor(sorted(special_ids), device=device))
        return call(self, student, corrupt(batch, NOISE, KIND, mask_id, special))

    distill.DistillLoss.__call__ = noisy_call


def mark(record: dict, command: str) -> dict:
    return dict(token_noise={"rate": NOISE, "kind": KIND}, command=command,
                precision=f"{record.get('precision') or record['bits']}, token noise {NOISE:g} ({KIND})")


if __name__ == "__main__":
    from transformers import AutoTokenizer

    from glue_probe import run_glue

    tok = AutoTokenizer.from_pretrained(sys.argv[sys.argv.index("--model") + 1])
    install(tok.mask_token_id, tok.all_special_ids)
    run_glue(f"NOISE={NOISE:g} NOISE_KIND={KIND}", "token_noise.py", "token_noise", mark)
