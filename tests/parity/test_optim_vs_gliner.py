"""The optimizer against the reference: gliner's parameter groups, transformers' schedules, torch's AdamW."""

from __future__ import annotations

import dataclasses
import json
import types

import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from gliner.training import Trainer, TrainingArguments

from gliner_jax.checkpoint_io import gliner_table
from gliner_jax.config import GLiNERConfig
from gliner_jax.hub import GLINER_CONFIG_FILE
from gliner_jax.modeling.gliner import GLiNERModel
from gliner_jax.testing.builders import build_reference
from gliner_jax.training.optim import (
    OptimizerConfig,
    decay_mask,
    parameter_groups,
    schedule,
)
from tests.utils.gliner_parity import reference_batch, reference_gradients
from tests.utils.optim import flat, random_grads, run_optax, tiny_params

ENCODER_LR, OTHERS_LR = 1e-5, 3e-5
HF_SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


def reference_defaults() -> dict:
    """gliner's TrainingArguments defaults (no instance: transformers' device setup needs `accelerate`)."""
    return {f.name: f.default for f in dataclasses.fields(TrainingArguments) if f.default is not dataclasses.MISSING}


def never_updated(reference) -> set[str]:
    """The reference's parameters that a backward pass leaves without a gradient: torch's AdamW skips them."""
    _, gradients = reference_gradients(
        reference, reference_batch(reference, ["Marie Curie won the Nobel Prize ."], ["person", "award"])
    )
    return {name for name, _ in reference.model.named_parameters()} - set(gradients)


@pytest.mark.parametrize(
    "case",
    [
        dict(  # the cross fuser, built and never run by a uni-encoder
            span_mode="markerV0",
            hidden_size=48,
            num_rnn_layers=1,
            max_width=4,
            post_fusion_schema="l2l-t2l",
            unused={"cross_fuser"},
        ),
        dict(span_mode="token_level", hidden_size=64, num_rnn_layers=2),
        dict(backbone="bert", span_mode="markerV0", hidden_size=48, unused={"pooler"}),
        dict(backbone="modernbert", span_mode="token_level", hidden_size=32),
        dict(
            bi_encoder=True,
            span_mode="markerV0",
            hidden_size=64,
            num_rnn_layers=1,
            max_width=4,
            unused={"pooler", "rnn"},
        ),
        dict(
            bi_encoder=True,
            backbone="modernbert",
            span_mode="token_level",
            hidden_size=40,
            num_rnn_layers=2,
            unused={"pooler", "rnn"},  # the label encoder's pooler
        ),
    ],
    ids=["span_projection", "token_rnn2", "bert_pooler", "modernbert_norms", "bi_span_rnn", "bi_modernbert_token"],
)
def test_groups_and_decay_match_reference_trainer(case, gliner_backbone, family_backbone, labels_backbone, tmp_path):
    """gliner's Trainer.create_optimizer on the reference model: same (lr group, decay) for every parameter. What
    no GLiNER computation reads (the BERT pooler, a bi-encoder's BiLSTM, a uni-encoder's cross fuser: a backward pass
    leaves their gradient None, so gliner's AdamW never updates them) is frozen here. A bi-encoder's label encoder,
    at gliner's encoder rate there, is its own group here (at the encoder's rate by default)."""
    case = dict(case)
    unused = case.pop("unused", set())  # the modules whose parameters no computation reads
    backbone = family_backbone(case.pop("backbone")) if "backbone" in case else gliner_backbone
    if case.pop("bi_encoder", False):
        case["labels_encoder"] = str(labels_backbone)
    reference = build_reference(backbone, tmp_path, **case)
    chosen = dict(learning_rate=ENCODER_LR, weight_decay=0.1, others_lr=OTHERS_LR, others_weight_decay=0.01)
    args = types.SimpleNamespace(**{**reference_defaults(), **chosen})
    torch_optimizer = Trainer.create_optimizer(types.SimpleNamespace(model=reference, optimizer=None, args=args))
    assert isinstance(torch_optimizer, torch.optim.AdamW)
    names = {id(p): name.removeprefix("model.") for name, p in reference.named_parameters()}
    torch_groups = {}
    for group in torch_optimizer.param_groups:
        label = {ENCODER_LR: "encoder", OTHERS_LR: "others"}[group["lr"]], group["weight_decay"] > 0
        torch_groups.update({names[id(p)]: label for p in group["params"]})
    assert len(torch_groups) == len(names)
    skipped = never_updated(reference)
    for name, (group, decays) in torch_groups.items():
        if name in skipped:
            torch_groups[name] = "frozen", decays
        elif name.startswith(("token_rep_layer.labels_encoder.", "token_rep_layer.labels_projection.")):
            assert group == "encoder"
            torch_groups[name] = "labels_encoder", decays
    whole = ("rnn.", "cross_fuser.")
    modules = {name.split(".")[0] if name.startswith(whole) else name.split(".")[-3] for name in skipped}
    assert modules == unused

    config = GLiNERConfig.from_dict(json.loads((tmp_path / GLINER_CONFIG_FILE).read_text()))
    table = {m.torch_key: "/".join(m.path) for m in gliner_table(config)}
    expected: dict[str, set] = {}  # stacked layers: one path holds every layer's tensor
    for name, label in torch_groups.items():
        expected.setdefault(table[name], set()).add(label)
    assert all(len(labels) == 1 for labels in expected.values())

    params = nnx.state(nnx.eval_shape(lambda: GLiNERModel(config, rngs=nnx.Rngs(0))), nnx.Param)
    optimizer_config = OptimizerConfig(num_steps=10)
    groups, decays = flat(parameter_groups(params, optimizer_config)), flat(decay_mask(params, optimizer_config))
    ours = {path: {(groups[path], decays[path])} for path in groups}
    assert ours == expected
    assert {"encoder", "others"} <= {group for group, _ in set().union(*ours.values())}


def test_adam_defaults_match_reference():
    defaults, ours = reference_defaults(), OptimizerConfig(num_steps=1)
    assert (ours.b1, ours.b2, ours.eps) == (defaults["adam_beta1"], defaults["adam_beta2"], defaults["adam_epsilon"])
    assert defaults["optim"] == "adamw_torch"


@pytest.mark.parametrize(("num_steps", "ratio"), [(15000, 0.05), (10, 0.3), (7, 0.1), (20, 0.0), (5, 1.0)])
def test_warmup_steps_from_ratio_match_reference(num_steps, ratio):
    reference = TrainingArguments.get_warmup_steps(types.SimpleNamespace(warmup_steps=0, warmup_ratio=ratio), num_steps)
    assert OptimizerConfig(num_steps=num_steps, warmup_ratio=ratio).num_warmup_steps == reference


@pytest.mark.parametrize("scheduler", list(HF_SCHEDULERS))
@pytest.mark.parametrize(("num_steps", "warmup"), [(13, 4), (9, 0), (6, 6)])
def test_schedule_matches_transformers(scheduler, num_steps, warmup):
    """Rate of each optimizer step 0..N-1 (the first one at rate 0 after warmup, as the HF Trainer)."""
    config = OptimizerConfig(num_steps=num_steps, warmup_steps=warmup, scheduler=scheduler)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=OTHERS_LR)
    hf = transformers.get_scheduler(HF_SCHEDULERS[scheduler], optimizer, warmup, num_steps)
    expected = []
    for _ in range(num_steps):
        expected.append(hf.get_last_lr()[0])
        optimizer.step()
        hf.step()
    ours = [float(schedule(config, OTHERS_LR)(step)) for step in range(num_steps)]
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("max_grad_norm", [1.0, None])
def test_adamw_steps_match_torch(max_grad_norm):
    """torch AdamW with the reference's four groups (encoder/others x decay/no decay), clip_grad_norm_ over all
    parameters, HF linear schedule: the same parameters and learning rates after every step."""
    params, steps = tiny_params(), 6
    config = OptimizerConfig(
        num_steps=steps,
        encoder_lr=1e-2,
        others_lr=3e-2,
        warmup_steps=2,
        scheduler="linear",
        max_grad_norm=max_grad_norm,
    )
    grads = random_grads(params, steps)
    ours, rates = run_optax(config, params, grads)

    tensors = {k: torch.nn.Parameter(torch.from_numpy(np.array(v))) for k, v in flat(params).items()}
    no_decay = {k for k in tensors if "bias" in k or "LayerNorm" in k}  # the reference's rule, by hand
    encoder = {k for k in tensors if k.startswith(("encoder/", "projection/"))}
    torch_groups = [
        {"params": [tensors[k] for k in keys], "lr": lr, "weight_decay": wd}
        for keys, lr, wd in [
            (encoder - no_decay, 1e-2, 0.1),
            (encoder & no_decay, 1e-2, 0.0),
            (set(tensors) - encoder - no_decay, 3e-2, 0.01),
            ((set(tensors) - encoder) & no_decay, 3e-2, 0.0),
        ]
    ]
    assert all(group["params"] for group in torch_groups)
    optimizer = torch.optim.AdamW(torch_groups, betas=(0.9, 0.999), eps=1e-8)
    scheduler = transformers.get_scheduler("linear", optimizer, 2, steps)
    clipped = False
    for step, g in enumerate(grads):
        lrs = scheduler.get_last_lr()
        assert rates[step] == pytest.approx({"lr/encoder": lrs[0], "lr/others": lrs[2]}, rel=1e-6, abs=1e-12)
        for k, t in tensors.items():
            t.grad = torch.from_numpy(g[k])
        if max_grad_norm:
            clipped |= float(torch.nn.utils.clip_grad_norm_(list(tensors.values()), max_grad_norm)) > max_grad_norm
        optimizer.step()
        scheduler.step()
        for k, t in tensors.items():
            np.testing.assert_allclose(ours[step][k], t.detach().numpy(), rtol=0, atol=1e-6, err_msg=k)
    assert clipped or not max_grad_norm
    assert any(np.abs(ours[-1][k] - np.asarray(v)).max() > 1e-2 for k, v in flat(params).items())
