"""Reference models for tests and benchmarks, built offline with PyTorch: a locally trained tokenizer, random
Hugging Face encoders and `gliner` models on them, and transformers' forward pass to compare encoders with.
Nothing here touches a model hub.
"""

from __future__ import annotations

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


def build_backbone(
    directory: Path,
    encoder_config: dict,
    *,
    seed: int = 0,
    noise: float = 0.05,
    tokenizer: dict | None = None,
    spare_rows: int = 0,
) -> Path:
    """A random DeBERTa-v2/v3 (`encoder_config` as transformers keys; vocab sized to the tokenizer, plus
    `spare_rows` unused embedding rows as deberta-v3 has: 128100 rows for 128001 ids) with a locally trained
    tokenizer (`tokenizer`: keyword arguments of `train_tokenizer`), saved together: a `model_name` for gliner.
    Every tensor gets N(0, noise) added."""
    import torch
    import transformers

    vocab = len(train_tokenizer(directory, **(tokenizer or {}))) + spare_rows
    torch.manual_seed(seed)
    config = transformers.DebertaV2Config(**{**encoder_config, "vocab_size": vocab})
    model = transformers.DebertaV2Model(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(noise * torch.randn_like(param))
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
    with torch.no_grad():
        probs = torch.sigmoid(reference.run_batch(batch).logits).numpy()
    # One shared label list, so no label slot is padding; only spans or words past a text's end are invalid.
    if reference.config.span_mode == "token_level":  # [B, W, C, 3]
        probs = probs.min(axis=-1)
        valid = np.arange(probs.shape[1])[None, :, None] < batch["text_lengths"].numpy().reshape(-1, 1, 1)
    else:  # [B, W, K, C]
        valid = batch["span_mask"].numpy().reshape(probs.shape[:3])[..., None]
    probs = np.sort(probs[np.broadcast_to(valid, probs.shape)])
    index = (np.array(quantiles) * (len(probs) - 2)).astype(int)
    return [float((probs[i] + probs[i + 1]) / 2) for i in index]


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
