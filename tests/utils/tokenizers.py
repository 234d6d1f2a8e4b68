"""Small offline fast tokenizers of the families GLiNER encoders use (WordPiece, byte-level BPE, Metaspace with a
beginning-of-sequence token only), trained on the reference corpus, with gliner's prompt tokens added."""

from __future__ import annotations

import copy
import functools

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from gliner_jax.testing.builders import CORPUS

PROMPT_TOKENS = ["<<ENT>>", "<<SEP>>"]


def wordpiece() -> PreTrainedTokenizerFast:
    """BERT-style: lower-cased, accents stripped, punctuation split off, [CLS] ... [SEP]."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tokenizer.train_from_iterator(CORPUS * 5, trainers.WordPieceTrainer(vocab_size=150, special_tokens=specials))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.decoder = decoders.WordPiece()
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )
    wrapped.add_tokens(PROMPT_TOKENS, special_tokens=True)
    return wrapped


def byte_level_bpe() -> PreTrainedTokenizerFast:
    """RoBERTa-style: byte-level BPE with a prefix space, <s> ... </s>."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS * 5, trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 1), add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    wrapped.add_tokens(PROMPT_TOKENS, special_tokens=True)
    return wrapped


def metaspace_bos_only() -> PreTrainedTokenizerFast:
    """Llama-style: Metaspace that prepends only to a sequence's first piece, <s> before the words and nothing
    after, padded and truncated on the left."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    specials = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256))]
    tokenizer.train_from_iterator(CORPUS * 5, trainers.BpeTrainer(vocab_size=600, special_tokens=specials))
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer.decoder = decoders.Metaspace(prepend_scheme="first")
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>",
        padding_side="left",
        truncation_side="left",
    )
    wrapped.add_tokens(PROMPT_TOKENS, special_tokens=True)
    return wrapped


TOKENIZERS = {"wordpiece": wordpiece, "byte_level_bpe": byte_level_bpe, "metaspace_bos_only": metaspace_bos_only}


@functools.cache
def _trained_once(kind: str) -> PreTrainedTokenizerFast:
    return TOKENIZERS[kind]()


def trained(kind: str) -> PreTrainedTokenizerFast:
    """A copy of the `kind` tokenizer, trained once per process (the copy is the caller's to change)."""
    return copy.deepcopy(_trained_once(kind))
