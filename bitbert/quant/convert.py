"""`binarize`: swap the modules of a stock Hugging Face BERT-family model for quantized ones."""
from __future__ import annotations

from torch import nn

from ..core.config import QuantConfig
from . import attention
from .layers import QuantEmbedding, QuantLinear
from .quantizers import ActQuantizer

SUPPORTED_MODEL_TYPES = ("bert", "roberta")


class UnsupportedModelError(ValueError):
    """The model's architecture is not one bitbert knows how to convert."""


def base_model(model: nn.Module) -> nn.Module:
    """The encoder (BertModel / RobertaModel) of a model or task-head model; checks the arch."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"cannot binarize {type(model).__name__} (model_type={model_type!r}); supported model types: "
            f"{list(SUPPORTED_MODEL_TYPES)} (BertModel, BertFor*, RobertaModel, RobertaFor*)")
    return getattr(model, "base_model", model)


def _inherit(new: ActQuantizer | None, old: ActQuantizer | None) -> None:
    """Start ``new`` from ``old``'s learned α, β (and calibrated flag) when both are elastic
    quantizers of the same kind of input; otherwise ``new`` stays fresh."""
    if (isinstance(new, ActQuantizer) and isinstance(old, ActQuantizer) and new.kind == old.kind == "elastic"
            and new.signed == old.signed and new.beta.shape == old.beta.shape):
        new.load_state_dict(old.state_dict())


def _swap_linear(parent: nn.Module, name: str, config: QuantConfig, quantize: bool, signed_input: bool,
                 inherit: bool = False) -> None:
    old: nn.Linear = getattr(parent, name)
    if quantize and (config.weight_bits < 32 or config.act_bits < 32):
        new: nn.Linear = QuantLinear.from_linear(old, config, signed_input)
        if inherit and isinstance(old, QuantLinear):
            _inherit(new.act_quant, old.act_quant)
    elif isinstance(old, QuantLinear):  # back to full precision, same Parameters
        new = nn.Linear(old.in_features, old.out_features, bias=old.bias is not None, device="meta")
        new.weight, new.bias = old.weight, old.bias
    else:
        return
    setattr(parent, name, new)


def _swap_embedding(parent: nn.Module, name: str, quantize: bool, config: QuantConfig) -> None:
    old: nn.Embedding = getattr(parent, name)
    if quantize:
        setattr(parent, name, QuantEmbedding.from_embedding(old, config))
    elif isinstance(old, QuantEmbedding):
        new = nn.Embedding(old.num_embeddings, old.embedding_dim, padding_idx=old.padding_idx, device="meta")
        new.weight = old.weight
        setattr(parent, name, new)


def binarize(model: nn.Module, config: QuantConfig, inherit_quantizers: bool = False) -> nn.Module:
    """Convert ``model`` in place to the precision and methods of ``config`` and return it.

    Works on a stock model or on one converted before (multi-distillation re-quantizes the previous
    student): weights are shared; quantizer parameters start fresh and need :func:`bitbert.calibrate`,
    unless ``inherit_quantizers`` (`bitbert.quant.schedule.QuantInit`): then each elastic quantizer of the
    same kind starts from the one it replaces, and ``calibrate(..., only_uncalibrated=True)`` keeps it.
    """
    base = base_model(model)
    hf_config = model.config
    emb = base.embeddings
    for key, attr in (("word", "word_embeddings"), ("position", "position_embeddings"),
                      ("token_type", "token_type_embeddings")):
        if hasattr(emb, attr):
            _swap_embedding(emb, attr, config.embed_bits == 1 and key in config.embeddings, config)

    if config.ffn_act != "keep":
        hf_config.hidden_act = config.ffn_act  # so a saved model rebuilds with the same activation
    for index, layer in enumerate(base.encoder.layer):
        lc = config.layer_config(index)  # the first layers may run wider activations
        sa = layer.attention.self
        for proj in ("query", "key", "value"):
            _swap_linear(sa, proj, lc, True, True, inherit_quantizers)
        _swap_linear(layer.attention.output, "dense", lc, True, True, inherit_quantizers)
        _swap_linear(layer.intermediate, "dense", lc, True, True, inherit_quantizers)
        _swap_linear(layer.output, "dense", lc, True, lc.ffn2_input == "signed", inherit_quantizers)
        if config.ffn_act != "keep":
            layer.intermediate.intermediate_act_fn = nn.ReLU() if config.ffn_act == "relu" else nn.GELU()
        old = getattr(sa, "bitbert", None)
        if not lc.attention.replaced:
            if old is not None:
                del sa.bitbert
            continue
        new = attention.attach(sa, lc, hf_config.hidden_size)
        if old is not None and old.residual is not None and new.residual is not None \
                and old.residual.rank == new.residual.rank:
            new.residual.load_state_dict(old.residual.state_dict())
        if old is not None and inherit_quantizers:
            for site in ("q_quant", "k_quant", "v_quant", "p_quant"):
                _inherit(getattr(new, site), getattr(old, site))

    if getattr(base, "pooler", None) is not None:
        _swap_linear(base.pooler, "dense", config, config.binarize_pooler, True, inherit_quantizers)
    base_ids = {id(m) for m in base.modules()}
    for parent in [m for m in model.modules() if id(m) not in base_ids]:
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and id(child) not in base_ids:
                _swap_linear(parent, name, config, config.binarize_classifier, True, inherit_quantizers)

    uses_binary_attention = any(hasattr(l.attention.self, "bitbert") for l in base.encoder.layer)
    if uses_binary_attention:
        attention.register()
        hf_config._attn_implementation = attention.ATTENTION_NAME
    elif hf_config._attn_implementation == attention.ATTENTION_NAME:
        hf_config._attn_implementation = "eager"
    hf_config.bitbert = config.to_dict()
    model.bitbert_config = config
    return model


def quant_config_of(model: nn.Module) -> QuantConfig:
    """The QuantConfig a model was converted with (full precision if it never was)."""
    cfg = getattr(model, "bitbert_config", None)
    if cfg is not None:
        return cfg
    stored = getattr(getattr(model, "config", None), "bitbert", None)
    return QuantConfig.from_dict(stored) if stored else QuantConfig(preset="fp")


def quantizer_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Learned quantizer parameters (α, β): they get their own optimizer group."""
    from .quantizers import ActQuantizer

    return [p for m in model.modules() if isinstance(m, ActQuantizer) for p in m.parameters(recurse=False)]

