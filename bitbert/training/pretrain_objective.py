"""What BiPFT pretraining optimises: the student built from its teacher, the model wrapper that
returns what the losses need, and the loss (MLM / NSP + hidden states + soft CE to the teacher)."""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.hub import from_hub_or_dir
from ..quant.convert import UnsupportedModelError, binarize
from ..tasks.corpus import IGNORE_INDEX
from .losses import hidden_mse, soft_cross_entropy
from .pretrain_config import PretrainConfig


class PretrainingObjective(nn.Module):
    """A BertForMaskedLM / BertForPreTraining whose forward returns what the losses need:
    ``(hidden_states, mlm_logits, nsp_logits)``, the vocabulary projection applied only at the
    masked positions (``labels != -100``; a third of a small model's FLOPs at all positions).
    ``mlm`` / ``nsp`` False skip a head (a teacher without it). Training goes through this
    module's forward, so DistributedDataParallel sees every step."""

    def __init__(self, model: nn.Module, mlm: bool = True, nsp: bool = False) -> None:
        super().__init__()
        if getattr(model.config, "model_type", None) != "bert" or not hasattr(model, "cls"):
            raise UnsupportedModelError(f"pretraining needs a BERT model with a 'cls' head, got {type(model).__name__}")
        self.model, self.mlm, self.nsp = model, mlm, nsp

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                labels: torch.Tensor, next_sentence_label: torch.Tensor | None = None):
        out = self.model.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                              output_hidden_states=True)
        mlm_logits = self.model.cls.predictions(out.last_hidden_state[labels != IGNORE_INDEX]) if self.mlm else None
        nsp_logits = self.model.cls.seq_relationship(out.pooler_output) if self.nsp else None
        return out.hidden_states, mlm_logits, nsp_logits


def build_student(teacher_path: str | Path, config: PretrainConfig) -> tuple[nn.Module, nn.Module, dict[str, bool]]:
    """(student, teacher, teacher_heads): both BertForMaskedLM (BertForPreTraining with ``nsp``)
    loaded in float32 from the full-precision checkpoint ``teacher_path``; the student binarized
    with ``config.quant_config()``. ``teacher_heads`` says which heads the checkpoint really has
    (``mlm``, ``nsp``): a missing head starts fresh in the student and is not distilled."""
    from transformers import AutoConfig, BertForMaskedLM, BertForPreTraining
    from transformers.activations import ACT2FN

    teacher_path = Path(teacher_path)
    hf_config = from_hub_or_dir(AutoConfig.from_pretrained, teacher_path, "teacher")
    if getattr(hf_config, "bitbert", None):
        raise ValueError(f"{teacher_path} is a bitbert (quantized) model; the teacher must be full precision")
    if hf_config.model_type != "bert":
        raise UnsupportedModelError(f"pretraining supports BERT teachers; {teacher_path} is {hf_config.model_type!r}")
    cls = BertForPreTraining if config.nsp else BertForMaskedLM
    model, info = from_hub_or_dir(lambda p: cls.from_pretrained(p, dtype=torch.float32, output_loading_info=True),
                                  teacher_path, "teacher")
    missing = set(info["missing_keys"])
    encoder_missing = sorted(k for k in missing if k.startswith("bert.") and not k.startswith("bert.pooler."))
    if encoder_missing:
        raise ValueError(f"{teacher_path}: the checkpoint lacks encoder weights {encoder_missing[:5]}")
    heads = {"mlm": not any(k.startswith("cls.predictions.transform.") for k in missing),
             "nsp": config.nsp and not any(k.startswith("cls.seq_relationship.") for k in missing)}
    # Without an MLM head in the checkpoint the student's starts fresh; its decoder stays tied to
    # the word embeddings. With 1-bit word embeddings the tied decoder multiplies by the
    # full-precision latent weights (the decoder is not binarized), not by their binarized rows.
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    student = binarize(model, config.quant_config())
    # binarize() rewrites config.hidden_act (e.g. to relu) so a saved model rebuilds its FFN; the
    # MLM head reads it too when rebuilt, so give the head that activation now: what is trained is
    # what `bitbert.load` returns.
    student.cls.predictions.transform.transform_act_fn = ACT2FN[student.config.hidden_act]
    return student.train(), teacher, heads


# --------------------------------------------------------------------------- losses
class PretrainLoss:
    """``loss(student_objective, batch)``: MLM (+ NSP) CE + hidden-state MSE to the teacher + soft CE
    to the teacher's logits where it has the heads. The teacher is always in eval mode, no grad."""

    compilable = True  # read by train(): no per-step hooks
    graphable = False  # masked positions are selected by boolean indexing, a data-dependent shape

    def __init__(self, teacher: nn.Module, heads: dict[str, bool], config: PretrainConfig, compile: bool = False) -> None:
        self.teacher = PretrainingObjective(teacher.eval(), mlm=heads["mlm"], nsp=heads["nsp"])
        self.teacher_fwd = torch.compile(self.teacher, dynamic=True) if compile else self.teacher
        self.config = config

    def disable_compile(self) -> None:
        self.teacher_fwd = self.teacher

    def __call__(self, student: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        c = self.config
        self.teacher.eval()
        with torch.no_grad():
            t_hidden, t_mlm, t_nsp = self.teacher_fwd(**batch)
        s_hidden, s_mlm, s_nsp = student(**batch)
        loss = c.mlm_weight * mlm_loss(s_mlm, batch["labels"])
        if s_nsp is not None:
            loss = loss + c.mlm_weight * F.cross_entropy(s_nsp.float(), batch["next_sentence_label"])
        if c.hidden_weight:
            loss = loss + c.hidden_weight * hidden_mse(s_hidden, t_hidden, batch["attention_mask"])
        if c.kd_weight and t_mlm is not None and len(t_mlm):
            loss = loss + c.kd_weight * soft_cross_entropy(s_mlm, t_mlm)
        if c.kd_weight and t_nsp is not None and s_nsp is not None:
            loss = loss + c.kd_weight * soft_cross_entropy(s_nsp, t_nsp)
        return loss


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of masked-position logits (N, V) against the labels != -100 of (B, L) labels;
    a batch without a masked token gives 0, not NaN."""
    target = labels[labels != IGNORE_INDEX]
    total = F.cross_entropy(logits.float(), target, reduction="sum")
    return total if reduction == "sum" else total / max(target.numel(), 1)
