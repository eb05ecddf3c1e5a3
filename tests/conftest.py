import pytest
import torch
from transformers import BertConfig, RobertaConfig

SHARED = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared"


def tiny_bert_config(**kw) -> BertConfig:
    base = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                max_position_embeddings=64, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    base.update(kw)
    return BertConfig(**base)


@pytest.fixture
def tiny_config() -> BertConfig:
    return tiny_bert_config()


@pytest.fixture
def tiny_roberta_config() -> RobertaConfig:
    return RobertaConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=66, num_labels=3, pad_token_id=1)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 120, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0
    mask[2, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}
