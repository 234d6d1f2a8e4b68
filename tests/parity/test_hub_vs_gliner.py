"""Hub repo ids and legacy layouts, offline: a Hugging Face cache written on disk in huggingface_hub's layout holds
checkpoints as older gliner versions wrote them and their backbone under its own id; gliner 0.2.29 and gliner-jax
load the same ids from it and find the same entities. Bad input through the command line: one `error:` line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gliner
import huggingface_hub
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from gliner_jax import GLiNER
from gliner_jax.checkpoint_io import CheckpointMismatchError, gliner_table, state_to_torch
from gliner_jax.cli import main
from gliner_jax.hub import LABELS_TOKENIZER_DIR, ModelNotFoundError
from gliner_jax.testing.builders import build_backbone, build_reference, quantile_thresholds
from gliner_jax.testing.hub_cache import add_to_cache, directory_files
from gliner_jax.training.config import load_train_config
from gliner_jax.training.model_init import build_model
from tests.utils.encoders import TINY_V3
from tests.utils.legacy_layouts import (
    BACKBONE_ID,
    DROP,
    OLD_TRAINING_KEYS,
    POSITION_IDS,
    WORD_EMBEDDINGS,
    Layout,
    backbone_files,
    layout_files,
)

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [
    "Marie Curie won the Nobel Prize in Physics in 1903, and again in 1911!",
    "Dr. Smith-Jones (WHO) met Angela Merkel in Geneva at 10:30am on Tuesday with 3 colleagues from the UN.",
    "Zürich, São Paulo & Kraków: Müller-Lüdenscheidt_GmbH paid $1,200.50 on 3/14/2015.",
]
LABELS = ["person", "award", "city name", "organization", "date"]
MODES = {
    "span": dict(span_mode="markerV0", hidden_size=48, max_width=4, max_len=48),
    "token": dict(span_mode="token_level", hidden_size=48, max_len=48),
}
NO_INDICES = {"encoder_config": DROP, "class_token_index": DROP, "vocab_size": DROP}
# One repo per layout gliner 0.2.29 reads (see tests/utils/legacy_layouts.py for who wrote which).
LAYOUTS = {
    # gliner 0.1.x (the v2.1 models): model_name and training settings only, pytorch_model.bin carrying the
    # position_ids buffer of old transformers, no tokenizer files.
    "v0.1-model-name-only": (
        "span",
        Layout(NO_INDICES | OLD_TRAINING_KEYS, tokenizer=False, extra_tensors={POSITION_IDS: torch.arange(128)[None]}),
    ),
    # gliner 0.2.x: indices and tokenizer saved, encoder_config null (read from model_name with vocab_size).
    "v0.2-encoder-config-null": ("token", Layout({"encoder_config": None})),
    "indices-minus-one-bf16": (
        "token",
        Layout(NO_INDICES | {"class_token_index": -1, "vocab_size": -1}, tokenizer=False, weights="bf16"),
    ),
    "vocab-size-set": ("span", Layout({"encoder_config": DROP, "class_token_index": -1}, tokenizer=False)),
    "encoder-config-no-tokenizer": ("span", Layout({"class_token_index": -1, "vocab_size": -1}, tokenizer=False)),
    "tokenizer-holds-tokens": ("token", Layout(NO_INDICES)),
    "modern-safetensors-beside-bin": ("span", Layout({}, weights="both")),
}
REFUSED = {
    "indices-without-tokenizer": ("span", Layout({"encoder_config": DROP}, tokenizer=False)),
    "extra-embedding-rows": ("span", Layout(NO_INDICES, tokenizer=False, rows_delta=2)),
    "unexpected-tensor": ("span", Layout(NO_INDICES, extra_tensors={"span_rep_layer.extra": torch.ones(2)})),
}
ARCHITECTURES = {  # the field named, and the config fields that select what is not implemented
    "decoder_mode": {"labels_decoder": "openai-community/gpt2", "decoder_mode": "prompt"},
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """(cache, reference directories by mode, backbone directory): every repo of LAYOUTS, REFUSED and ARCHITECTURES,
    and the backbone, in one cache."""
    root = tmp_path_factory.mktemp("hub")
    backbone = build_backbone(root / "backbone", TINY_V3, spare_rows=20)  # 20 rows past its ids, as deberta-v3
    cache = root / "cache"
    add_to_cache(cache, BACKBONE_ID, backbone_files(backbone))
    references = {mode: root / mode for mode in MODES}
    for mode, options in MODES.items():
        build_reference(backbone, references[mode], logit_scale=4.0, **options)
    for name, (mode, layout) in (LAYOUTS | REFUSED).items():
        add_to_cache(cache, f"legacy-org/{name}", layout_files(references[mode], layout))
    for key, fields in ARCHITECTURES.items():  # no weights to read, a backbone nowhere: refused before either
        config = {"model_name": "absent-org/backbone", "span_mode": "markerV0", **fields}
        files = {"gliner_config.json": json.dumps(config).encode(), "pytorch_model.bin": b"not read"}
        add_to_cache(cache, f"legacy-org/{key}", files)
    # main: a config selecting what is not implemented (refused); v2: a span model.
    selected = ARCHITECTURES["decoder_mode"]
    add_to_cache(cache, "legacy-org/revisions", {"gliner_config.json": json.dumps(selected).encode()})
    add_to_cache(cache, "legacy-org/revisions", layout_files(references["span"], Layout({})), revision="v2")
    return cache, references, backbone


@pytest.fixture
def default_cache(hub, monkeypatch):
    """The test cache as the default one: what huggingface_hub reads from HF_HUB_CACHE when it is imported."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub[0]))
    return hub[0]


def entities(rows: list[list[dict]]) -> list[list[tuple]]:
    return [[(e["start"], e["end"], e["text"], e["label"]) for e in row] for row in rows]


def assert_same_predictions(ours, reference, thresholds: list[float]) -> None:
    for threshold in thresholds:
        expected = reference.inference(TEXTS, LABELS, threshold=threshold)
        got = ours.inference(TEXTS, LABELS, threshold=threshold)
        assert sum(map(len, expected)) > 0  # the comparison is not between empty lists
        assert entities(got) == entities(expected)
        scores = [[e["score"] for e in row] for row in got], [[e["score"] for e in row] for row in expected]
        for ours_row, ref_row in zip(*scores, strict=True):
            np.testing.assert_allclose(ours_row, ref_row, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_legacy_layout_loads_and_predicts_as_gliner(hub, name, tmp_path):
    cache, _, _ = hub
    reference = gliner.GLiNER.from_pretrained(f"legacy-org/{name}", cache_dir=cache)
    ours = GLiNER.from_pretrained(f"legacy-org/{name}", cache_dir=cache)
    assert ours.config.class_token_index == reference.config.class_token_index
    assert ours.config.encoder_config.vocab_size == reference.config.encoder_config.vocab_size
    assert len(ours.tokenizer) == len(reference.data_processor.transformer_tokenizer)
    thresholds = quantile_thresholds(reference, TEXTS, LABELS, (0.9, 0.97))
    assert_same_predictions(ours, reference, thresholds)

    # The export is a complete, modern layout that gliner loads strictly, with nothing read from the backbone.
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "gliner_config.json").read_text())
    assert saved["encoder_config"]["vocab_size"] == saved["vocab_size"] == len(ours.tokenizer)
    assert saved["class_token_index"] == reference.config.class_token_index
    assert (tmp_path / "tokenizer_config.json").is_file()
    exported = load_file(tmp_path / "model.safetensors")
    assert POSITION_IDS not in exported
    reloaded = gliner.GLiNER.from_pretrained(str(tmp_path), local_files_only=True, strict=True)
    assert_same_predictions(ours, reloaded, thresholds)


def test_bf16_checkpoint_is_read_exactly(hub):
    cache, references, _ = hub
    ours = GLiNER.from_pretrained("legacy-org/indices-minus-one-bf16", cache_dir=cache)
    exported = state_to_torch(ours.model, gliner_table(ours.config))
    for key, tensor in torch.load(references["token"] / "pytorch_model.bin", weights_only=True).items():
        np.testing.assert_array_equal(exported[key], tensor.bfloat16().float().numpy(), err_msg=key)


def test_refused_as_gliner_refuses(hub):
    """What gliner refuses, we refuse; what it loads only by ignoring a tensor, we refuse by name."""
    cache, _, _ = hub
    message = r"class_token_index=136 is out of range for the tokenizer \(len=135\)"
    with pytest.raises(ValueError, match=message):
        gliner.GLiNER.from_pretrained("legacy-org/indices-without-tokenizer", cache_dir=cache)
    with pytest.raises(ValueError, match=message):
        GLiNER.from_pretrained("legacy-org/indices-without-tokenizer", cache_dir=cache)

    with pytest.raises(RuntimeError, match=f"size mismatch for {WORD_EMBEDDINGS}"):
        gliner.GLiNER.from_pretrained("legacy-org/extra-embedding-rows", cache_dir=cache)
    with pytest.raises(CheckpointMismatchError) as error:
        GLiNER.from_pretrained("legacy-org/extra-embedding-rows", cache_dir=cache)
    assert f"{WORD_EMBEDDINGS}: file has (140, 64), model needs (138, 64)" in str(error.value)

    gliner.GLiNER.from_pretrained("legacy-org/unexpected-tensor", cache_dir=cache)  # strict=False ignores it
    with pytest.raises(CheckpointMismatchError, match=r"unexpected tensors: \['span_rep_layer.extra'\]"):
        GLiNER.from_pretrained("legacy-org/unexpected-tensor", cache_dir=cache)


@pytest.mark.parametrize("field", list(ARCHITECTURES))
def test_other_architecture_is_refused_before_anything_is_read(hub, default_cache, field):
    """Neither the weights (not a pickle) nor the backbone (in no cache) are touched."""
    with pytest.raises(NotImplementedError, match=field):
        GLiNER.from_pretrained(f"legacy-org/{field}")
    with pytest.raises(SystemExit) as error:
        main(["predict", "--model", f"legacy-org/{field}", "--labels", "person", "Marie Curie"])
    assert_one_error_line(error.value, field)


def assert_one_error_line(exit_: SystemExit, *fragments: str) -> None:
    assert isinstance(exit_.code, str) and exit_.code.startswith("error: ") and "\n" not in exit_.code
    for fragment in fragments:
        assert fragment in exit_.code


def test_unknown_id_and_missing_path(hub, default_cache, tmp_path):
    with pytest.raises(ModelNotFoundError, match="'nobody/no-such-model' is not in the Hugging Face cache"):
        GLiNER.from_pretrained("nobody/no-such-model")
    with pytest.raises(ModelNotFoundError, match="'legacy-org/vocab-size-set' at revision 'v2' is not in the Hugging"):
        GLiNER.from_pretrained("legacy-org/vocab-size-set", revision="v2")  # only main is cached
    with pytest.raises(ModelNotFoundError, match=r"\(HF_HUB_OFFLINE is set: nothing was downloaded\)"):
        GLiNER.from_pretrained("nobody/no-such-model", local_files_only=True)
    with pytest.raises(ModelNotFoundError, match=r"/no/such/model: no such directory$"):
        GLiNER.from_pretrained("/no/such/model")
    (tmp_path / "file.txt").write_text("")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        GLiNER.from_pretrained(tmp_path / "file.txt")
    with pytest.raises(FileNotFoundError, match=r"no gliner_config\.json, not a GLiNER model directory"):
        GLiNER.from_pretrained(tmp_path)


def test_revision_selects_the_snapshot(hub):
    cache, _, _ = hub
    with pytest.raises(NotImplementedError, match="decoder_mode"):
        GLiNER.from_pretrained("legacy-org/revisions", cache_dir=cache)
    model = GLiNER.from_pretrained("legacy-org/revisions", revision="v2", cache_dir=cache)
    assert model.config.span_mode == "markerV0"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["predict", "--model", "nobody/no-such-model", "--labels", "person", "x"], ["nobody/no-such-model", "cache"]),
        (["predict", "--model", "/no/such/model", "--labels", "person", "x"], ["/no/such/model: no such directory"]),
        (["predict", "--model", "legacy-org/tokenizer-holds-tokens", "--labels", "person,,date", "x"], ["blank label"]),
        (
            ["predict", "--model", "legacy-org/tokenizer-holds-tokens", "--labels", "person", "--threshold", "2", "x"],
            ["--threshold must be in [0, 1], got 2.0"],
        ),
        (["eval", "--model", "/no/such/model", "--data", str(ROOT / "data/tiny/dev.jsonl")], ["no such directory"]),
        (["convert", "nobody/no-such-model", "out"], ["nobody/no-such-model"]),
        (
            ["train", "--config", str(ROOT / "configs/tiny.yaml"), "model.tokeniser=x"],
            ["unknown key 'tokeniser' in model", "tokenizer"],
        ),
        (["train", "--config", str(ROOT / "configs/tiny.yaml"), "trainer.num_steps=many"], ["trainer"]),
        (
            ["train", "--config", str(ROOT / "configs/tiny.yaml"), "model.encoder=/no/such/encoder"],
            ["/no/such/encoder: no such directory"],
        ),
        (
            [
                "self-train",
                "--config",
                str(ROOT / "configs/self_training.yaml"),
                "--model",
                "m",
                "--unlabelled",
                "u",
                "--threshold",
                "-1",
            ],
            ["--threshold"],
        ),
    ],
    ids=[
        "unknown-id",
        "missing-path",
        "blank-label",
        "threshold",
        "eval-missing-model",
        "convert-unknown-id",
        "train-misspelt-key",
        "train-bad-value",
        "train-missing-encoder",
        "self-train-threshold",
    ],
)
def test_cli_bad_input_is_one_error_line(default_cache, args, fragments):
    with pytest.raises(SystemExit) as error:
        main(args)
    assert_one_error_line(error.value, *fragments)


@pytest.mark.slow  # a new process imports jax: 10-30 s
def test_cli_error_line_in_a_real_process(hub):
    """What a user sees: exit status 1 and a single line on stderr, no traceback."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hub[0]))
    command = [sys.executable, "-m", "gliner_jax.cli", "predict", "--model", "nobody/no-such-model", "--labels", "a"]
    done = subprocess.run([*command, "text"], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: nobody/no-such-model: no such directory")
    assert str(hub[0]) in done.stderr


@pytest.mark.slow  # a new process imports jax and compiles: 20-70 s
def test_cli_predicts_with_a_hub_id_from_hf_home(hub, tmp_path):
    """HF_HOME (no HF_HUB_CACHE) locates the cache at HF_HOME/hub, as huggingface_hub defines it."""
    cache, _, _ = hub
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "hub").symlink_to(cache)
    name = "legacy-org/v0.1-model-name-only"
    reference = gliner.GLiNER.from_pretrained(name, cache_dir=cache)
    threshold = quantile_thresholds(reference, TEXTS, LABELS, (0.9,))[0]
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_CACHE"} | {
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "home"),
    }
    command = [sys.executable, "-m", "gliner_jax.cli", "predict", "--model", name, "--labels", ",".join(LABELS)]
    done = subprocess.run(
        [*command, "--threshold", str(threshold), *TEXTS], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = [json.loads(line)["entities"] for line in done.stdout.splitlines()]
    expected = reference.inference(TEXTS, LABELS, threshold=threshold)
    assert sum(map(len, expected)) > 0
    assert entities(got) == entities(expected)


def test_convert_a_hub_id(hub, default_cache, tmp_path, capsys):
    """`convert` reads a legacy repo by id and writes a complete directory, both ways."""
    name = "legacy-org/v0.1-model-name-only"
    reference = gliner.GLiNER.from_pretrained(name, cache_dir=hub[0])
    thresholds = quantile_thresholds(reference, TEXTS, LABELS, (0.9,))
    assert main(["convert", name, str(tmp_path / "jax")]) == 0
    assert "(torch -> jax)" in capsys.readouterr().out
    assert_same_predictions(GLiNER.from_pretrained(tmp_path / "jax"), reference, thresholds)
    assert main(["convert", str(tmp_path / "jax"), str(tmp_path / "torch")]) == 0
    config = json.loads((tmp_path / "torch" / "gliner_config.json").read_text())
    assert config["model_name"] == BACKBONE_ID and config["lr_encoder"] == OLD_TRAINING_KEYS["lr_encoder"]
    reloaded = gliner.GLiNER.from_pretrained(str(tmp_path / "torch"), local_files_only=True, strict=True)
    assert_same_predictions(GLiNER.from_pretrained(tmp_path / "torch"), reloaded, thresholds)


def test_train_model_from_hub_ids(hub, default_cache):
    """model.init_from and model.encoder take repo ids: a legacy GLiNER completed as gliner completes it, and a
    backbone whose 20 spare embedding rows are dropped as gliner's resize drops them."""
    cache, _, backbone = hub
    tiny = ROOT / "configs" / "tiny.yaml"
    existing = ["model.encoder=null", "model.tokenizer=null", "model.gliner={}"]
    fine_tune = load_train_config(tiny, ["model.init_from=legacy-org/v0.1-model-name-only", *existing])
    built = build_model(fine_tune.model, seed=0)
    reference = gliner.GLiNER.from_pretrained("legacy-org/v0.1-model-name-only", cache_dir=cache)
    assert built.config.class_token_index == reference.config.class_token_index == len(built.tokenizer) - 2
    assert_same_predictions(built, reference, quantile_thresholds(reference, TEXTS, LABELS, (0.9,)))

    new = load_train_config(tiny, [f"model.encoder={BACKBONE_ID}", "model.tokenizer=null"])
    built = build_model(new.model, seed=0)
    pretrained = load_file(backbone / "model.safetensors")["embeddings.word_embeddings.weight"]
    embeddings = np.asarray(built.model.encoder.embeddings.word_embeddings.embedding[...])
    assert built.config.model_name == BACKBONE_ID
    assert embeddings.shape[0] == len(built.tokenizer) == len(pretrained) - 20 + 3
    np.testing.assert_array_equal(embeddings[: len(pretrained) - 20], pretrained[:-20])


@pytest.mark.slow  # a short training run: 20-60 s
def test_train_cli_fine_tunes_a_legacy_hub_model(hub, default_cache, tmp_path):
    """`gliner-jax train model.init_from=ORG/NAME` on a legacy repo exports a complete directory gliner loads."""
    overrides = ["model.init_from=legacy-org/v0.1-model-name-only", "model.encoder=null", "model.tokenizer=null"]
    overrides += ["model.gliner={}", f"trainer.output_dir={tmp_path}", "trainer.num_steps=2", "trainer.save_every=2"]
    assert main(["train", "--config", str(ROOT / "configs" / "tiny.yaml"), *overrides]) == 0
    config = json.loads((tmp_path / "final" / "gliner_config.json").read_text())
    assert config["class_token_index"] == config["vocab_size"] - 2 == config["encoder_config"]["vocab_size"] - 2
    reloaded = gliner.GLiNER.from_pretrained(str(tmp_path / "final"), local_files_only=True, strict=True)
    ours = GLiNER.from_pretrained(tmp_path / "final")
    assert_same_predictions(ours, reloaded, quantile_thresholds(reloaded, TEXTS, LABELS, (0.9,)))


LABELS_ENCODER_ID = "test-org/tiny-labels"  # a bi-encoder's label encoder repo in the test cache
# Bi-encoder layouts: gliner_config.json keys to set, and whether the repo holds labels_tokenizer/ (gliner wrote it
# from 0.2.2x on; the knowledgator gliner-bi-*-v1.0 repos predate it and name their label encoder's repo instead).
BI_LAYOUTS = {
    "bi-complete": ({"labels_encoder": "absent-org/labels-encoder"}, True),  # the label encoder's repo is not read
    "bi-no-labels-tokenizer": ({"labels_encoder": LABELS_ENCODER_ID}, False),
    "bi-labels-config-null": ({"labels_encoder": LABELS_ENCODER_ID, "labels_encoder_config": None}, False),
}


@pytest.fixture(scope="module")
def bi_hub(gliner_backbone, labels_backbone, tmp_path_factory):
    """A cache holding a bi-encoder in each of BI_LAYOUTS and its label encoder's repo."""
    root = tmp_path_factory.mktemp("bi_hub")
    build_reference(gliner_backbone, root / "bi", labels_encoder=str(labels_backbone), logit_scale=4.0, **MODES["span"])
    cache = root / "cache"
    add_to_cache(cache, LABELS_ENCODER_ID, directory_files(labels_backbone))
    saved = json.loads((root / "bi" / "gliner_config.json").read_text())
    names = ["pytorch_model.bin", "tokenizer.json", "tokenizer_config.json"]
    for name, (changes, with_labels_tokenizer) in BI_LAYOUTS.items():
        files = {"gliner_config.json": json.dumps(saved | changes).encode(), **directory_files(root / "bi", names)}
        if with_labels_tokenizer:
            folder = root / "bi" / LABELS_TOKENIZER_DIR
            files |= {f"{LABELS_TOKENIZER_DIR}/{p.name}": p for p in folder.iterdir()}
        add_to_cache(cache, f"bi-org/{name}", files)
    return cache


@pytest.mark.parametrize("name", list(BI_LAYOUTS))
def test_bi_encoder_layout_loads_and_predicts_as_gliner(bi_hub, name, tmp_path):
    """The label tokenizer from labels_tokenizer/ or the labels_encoder repo, the label encoder's config embedded or
    from that repo: gliner's entities; the export is complete (labels_tokenizer/ written) and gliner loads it
    strictly."""
    reference = gliner.GLiNER.from_pretrained(f"bi-org/{name}", cache_dir=bi_hub)
    ours = GLiNER.from_pretrained(f"bi-org/{name}", cache_dir=bi_hub)
    assert ours.config.labels_encoder == reference.config.labels_encoder
    assert ours.config.labels_encoder_config.hidden_size == reference.config.labels_encoder_config.hidden_size == 48
    assert ours.labels_tokenizer.get_vocab() == reference.data_processor.labels_tokenizer.get_vocab()
    thresholds = quantile_thresholds(reference, TEXTS, LABELS, (0.9, 0.97))
    assert_same_predictions(ours, reference, thresholds)

    ours.save_pretrained(tmp_path)
    assert (tmp_path / LABELS_TOKENIZER_DIR / "tokenizer_config.json").is_file()
    saved = json.loads((tmp_path / "gliner_config.json").read_text())
    saved["labels_encoder"] = "absent-org/labels-encoder"  # the export needs nothing from the label encoder's repo
    (tmp_path / "gliner_config.json").write_text(json.dumps(saved))
    reloaded = gliner.GLiNER.from_pretrained(str(tmp_path), local_files_only=True, strict=True)
    assert_same_predictions(ours, reloaded, thresholds)


def test_bi_encoder_without_its_label_encoder_repo_is_not_found(bi_hub, tmp_path):
    """No labels_tokenizer/ and a label encoder repo in no cache: named, as gliner fails (offline)."""
    directory = huggingface_hub.snapshot_download("bi-org/bi-no-labels-tokenizer", cache_dir=bi_hub)
    local = tmp_path / "model"
    local.mkdir()
    for path in Path(directory).iterdir():
        (local / path.name).write_bytes(path.read_bytes())
    config = json.loads((local / "gliner_config.json").read_text())
    (local / "gliner_config.json").write_text(json.dumps(config | {"labels_encoder": "absent-org/labels-encoder"}))
    with pytest.raises(ModelNotFoundError, match="absent-org/labels-encoder"):
        GLiNER.from_pretrained(local, cache_dir=bi_hub)
