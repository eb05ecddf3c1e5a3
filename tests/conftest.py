import pathlib

import pytest
import torch
from transformers import BertConfig, RobertaConfig

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"


def tiny_bert_config(**kw) -> BertConfig:
    base = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                max_position_embeddings=64, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    base.update(kw)
    return BertConfig(**base)


WORDS = "good bad fine awful great terrible movie plot actor story the a was is very not".split()


def wordpiece_tokenizer(tokens) -> "PreTrainedTokenizerFast":
    """A lower-casing BERT WordPiece tokenizer over [PAD] [UNK] [CLS] [SEP] [MASK] (ids 0-4) and ``tokens``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *tokens])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def save_tiny_base(d) -> "pathlib.Path":
    """Save a tiny untrained BertForSequenceClassification with a WordPiece tokenizer over `WORDS` to ``d``."""
    from transformers import BertForSequenceClassification

    fast = wordpiece_tokenizer(WORDS)
    BertForSequenceClassification(tiny_bert_config(vocab_size=len(fast))).save_pretrained(d)
    fast.save_pretrained(d)
    return pathlib.Path(d)


def sentiment_rows(label) -> list[str]:
    """A header and 36 rows "the movie was [very ...] WORD<TAB>label(positive)" over six sentiment words."""
    return ["sentence\tlabel"] + [f"the movie was {'very ' * (i % 3)}{w}\t{label(w in ('good', 'fine', 'great'))}"
                                  for i, w in enumerate(WORDS[:6] * 6)]


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
