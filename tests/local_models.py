"""Real tokenizers and tiny random models made on this machine in seconds, for the fast tier.

The fast tier needs no network, no model download and no Ray (``conftest.py`` enforces
it). Its models are real ``transformers`` models with real ``tokenizers`` tokenizers,
trained here on the shipped sample text: a byte-level BPE with a ChatML chat template
(the decoder, as SmolLM2 has) and a WordPiece with [CLS]/[SEP] (the encoder, as MiniLM
has). The slow tier trains and scores the real SmolLM2 and MiniLM.
"""

from __future__ import annotations

import json
from pathlib import Path

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def sample_texts(samples: Path, n: int = 300) -> list[str]:
    out = []
    for line in (samples / "ultrafeedback" / "train_1k.jsonl").read_text().splitlines()[:n]:
        r = json.loads(line)
        out += [r["prompt"], r["chosen"], r["rejected"]]
    return out


def chatml_bpe_tokenizer(out: Path, samples: Path, vocab_size: int = 2000) -> Path:
    """A byte-level BPE (any text encodes) with ChatML special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(sample_texts(samples), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
        chat_template=CHATML,
        model_max_length=8192,
    )
    fast.save_pretrained(out)
    return out


def wordpiece_tokenizer(out: Path, samples: Path, vocab_size: int = 2000) -> Path:
    """A lower-casing WordPiece with [CLS] a [SEP] b [SEP] pairs, as BERT's."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(
        sample_texts(samples), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    BertTokenizerFast(tokenizer_object=tok, model_max_length=512).save_pretrained(out)
    return out


def tiny_bert_config(tok, **extra):
    """The 2-layer, 32-wide BERT of the tests, sized to the tokenizer ``tok``."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        **extra,
    )


def random_bert(out: Path, tokenizer: Path) -> Path:
    """A 2-layer random BERT with the tokenizer in ``tokenizer``."""
    import torch
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    torch.manual_seed(0)
    BertModel(tiny_bert_config(tok)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def random_reward_bert(out: Path, tokenizer: Path, seed: int) -> Path:
    """A 2-layer random BERT with a (random) one-output reward head: a reward model whose
    scores are arbitrary but fixed, for tests that build their expectations from them."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    # BERT's initializer_range of 0.02 gives rewards that differ in the fifth decimal only
    config = tiny_bert_config(tok, num_labels=1, initializer_range=0.5)
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out
