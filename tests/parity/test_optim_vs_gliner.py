"""The optimizer against the reference: gliner's parameter groups, transformers' schedules, torch's AdamW."""

from __future__ import annotations

import dataclasses
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import transformers
from flax import nnx
from gliner.training import Trainer, TrainingArguments

from gliner_jax.checkpoint_io import GLINER_CONFIG_FILE, gliner_table
from gliner_jax.config import GLiNERConfig
from gliner_jax.modeling.gliner import GLiNERModel
from gliner_jax.testing.builders import build_reference
from gliner_jax.training.optim import (
    OptimizerConfig,
    apply_updates,
    decay_mask,
    float32_params,
    learning_rates,
    make_optimizer,
    parameter_groups,
    parameter_path,
    schedule,
    with_master_weights,
)
from tests.utils.gliner_parity import reference_batch, reference_gradients

ENCODER_LR, OTHERS_LR = 1e-5, 3e-5
HF_SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


def reference_defaults() -> dict:
    """gliner's TrainingArguments defaults (no instance: transformers' device setup needs `accelerate`)."""
    return {f.name: f.default for f in dataclasses.fields(TrainingArguments) if f.default is not dataclasses.MISSING}


def flat(tree) -> dict[str, object]:
    return {parameter_path(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def never_updated(reference) -> set[str]:
    """The reference's parameters that a backward pass leaves without a gradient: torch's AdamW skips them."""
    _, gradients = reference_gradients(
        reference, reference_batch(reference, ["Marie Curie won the Nobel Prize ."], ["person", "award"])
    )
    return {name for name, _ in reference.model.named_parameters()} - set(gradients)


@pytest.mark.parametrize(
    "case",
    [
        dict(span_mode="markerV0", hidden_size=48, num_rnn_layers=1, max_width=4),
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
    no GLiNER computation reads (the BERT pooler, a bi-encoder's BiLSTM: a backward pass leaves their gradient None,
    so gliner's AdamW never updates them) is frozen here. A bi-encoder's label encoder, at gliner's encoder rate
    there, is its own group here (at the encoder's rate by default)."""
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
    assert {"rnn" if name.startswith("rnn.") else name.split(".")[-3] for name in skipped} == unused

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


def tiny_params() -> nnx.State:
    rng = np.random.default_rng(0)

    def param(*shape: int) -> nnx.Param:
        return nnx.Param(jnp.asarray(rng.normal(size=shape), jnp.float32))

    return nnx.State(
        {
            "encoder": {
                "layer": {"kernel": param(2, 4, 3), "bias": param(2, 3)},
                "LayerNorm": {"scale": param(3), "bias": param(3)},
                "embed": {"embedding": param(5, 3)},
            },
            "projection": {"kernel": param(3, 2), "bias": param(2)},
            "rnn": {"layers": {0: {"forward": {"weight_ih": param(2, 8), "bias_ih": param(8)}}}},
            "head": {"kernel": param(2, 2), "bias": param(2)},
        }
    )


def random_grads(params: nnx.State, steps: int, scale: float = 2.0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [
        {k: scale * rng.normal(size=v.shape).astype(np.float32) for k, v in flat(params).items()} for _ in range(steps)
    ]


def as_tree(params: nnx.State, values: dict[str, np.ndarray]) -> nnx.State:
    return jax.tree_util.tree_map_with_path(lambda path, _: jnp.asarray(values[parameter_path(path)]), params)


def run_optax(config: OptimizerConfig, params: nnx.State, grads: list[dict]) -> tuple[list[dict], list[dict]]:
    """Params after each update, and `learning_rates` after each update."""
    tx = make_optimizer(config, params)
    state = tx.init(params)
    update = jax.jit(tx.update)
    trajectory, rates = [], []
    for g in grads:
        updates, state = update(as_tree(params, g), state, params)
        params = optax.apply_updates(params, updates)
        trajectory.append({k: np.asarray(v) for k, v in flat(params).items()})
        rates.append({k: float(v) for k, v in learning_rates(state).items()})
    return trajectory, rates


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


def test_grad_accumulation_equals_mean_gradient():
    """n micro-steps with grad_accum_steps=n == one step on their mean gradient; the micro-steps between
    updates leave the parameters as they are."""
    params, n, updates = tiny_params(), 3, 2
    grads = random_grads(params, n * updates)
    base = dict(num_steps=updates, encoder_lr=1e-2, others_lr=3e-2, warmup_steps=0, max_grad_norm=1.0)
    accumulated, rates = run_optax(OptimizerConfig(**base, grad_accum_steps=n), params, grads)
    means = [{k: np.mean([g[k] for g in grads[i * n : (i + 1) * n]], axis=0) for k in grads[0]} for i in range(updates)]
    single, single_rates = run_optax(OptimizerConfig(**base), params, means)
    for i in range(updates):
        for k in single[i]:
            np.testing.assert_allclose(accumulated[(i + 1) * n - 1][k], single[i][k], rtol=0, atol=1e-6)
            before = np.asarray(flat(params)[k]) if i == 0 else accumulated[i * n - 1][k]
            for micro in range(i * n, (i + 1) * n - 1):
                np.testing.assert_array_equal(accumulated[micro][k], before)
        assert rates[(i + 1) * n - 1] == single_rates[i]


@pytest.mark.parametrize("grad_accum_steps", [1, 2])
def test_frozen_params_unchanged_and_stateless(grad_accum_steps):
    params = tiny_params()
    config = OptimizerConfig(
        num_steps=4, warmup_steps=0, frozen_patterns=(r"^encoder/",), grad_accum_steps=grad_accum_steps
    )
    groups = flat(parameter_groups(params, config))
    frozen = {k for k, group in groups.items() if group == "frozen"}
    assert frozen == {k for k in groups if k.startswith("encoder/")}
    trajectory, _ = run_optax(config, params, random_grads(params, 4))
    for k, v in flat(params).items():
        changed = not np.array_equal(trajectory[-1][k], np.asarray(v))
        assert changed == (k not in frozen), k
    # Per trainable value: Adam's two moments, plus the accumulated gradient when accumulating.
    state = make_optimizer(config, params).init(params)
    state_size = sum(x.size for x in jax.tree.leaves(state) if x.ndim > 0)
    trainable_size = sum(v.size for k, v in flat(params).items() if k not in frozen)
    assert state_size == (2 + (grad_accum_steps > 1)) * trainable_size


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(num_steps=0), "num_steps"),
        (dict(encoder_lr=-1.0), "encoder_lr"),
        (dict(scheduler="cosine_with_restarts"), "scheduler"),
        (dict(warmup_ratio=1.5), "warmup_ratio"),
        (dict(warmup_steps=11), "warmup_steps"),
        (dict(grad_accum_steps=0), "grad_accum_steps"),
        (dict(b2=1.0), "b2"),
        (dict(frozen_patterns=("(",)), "frozen_patterns"),
    ],
)
def test_config_refusals(overrides, field):
    with pytest.raises(ValueError, match=field):
        OptimizerConfig(**{"num_steps": 10, **overrides})


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(encoder_pattern=r"^backbone/"), "encoder_pattern"),
        (dict(frozen_patterns=(r"^rnn/", r"^lstm/")), "frozen_patterns"),
        (dict(no_decay_patterns=(r"norm/gamma",)), "no_decay_patterns"),
    ],
)
def test_pattern_matching_no_parameter_is_refused(overrides, field):
    config = OptimizerConfig(num_steps=10, **overrides)
    with pytest.raises(ValueError, match=f"{field}.*matches no parameter"):
        make_optimizer(config, tiny_params())


@pytest.mark.slow
def test_master_weights_follow_float32_adamw():
    """bfloat16 parameters through `with_master_weights`: the masters in the state are what optax's AdamW makes of
    float32 parameters given the same gradients (clipping, groups, decay, schedule), and the parameters are the
    masters rounded to bfloat16 after every step."""
    config = OptimizerConfig(num_steps=5, encoder_lr=1e-2, others_lr=3e-2, warmup_steps=1, max_grad_norm=1.0)
    params32 = tiny_params()
    params16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params32)
    reference = jax.tree.map(lambda p: p.astype(jnp.float32), params16)  # the masters start from the bf16 values
    grads = [as_tree(params16, g) for g in random_grads(params32, 5)]
    grads = [jax.tree.map(lambda g: g.astype(jnp.bfloat16), g) for g in grads]  # as a bf16 backward pass gives them

    plain = make_optimizer(config, reference)
    plain_state = plain.init(reference)
    tx = with_master_weights(make_optimizer(config, params16))
    state = tx.init(params16)
    for g in grads:
        updates, plain_state = jax.jit(plain.update)(
            jax.tree.map(lambda x: x.astype(jnp.float32), g), plain_state, reference
        )
        reference = optax.apply_updates(reference, updates)
        updates, state = jax.jit(tx.update)(g, state, params16)
        params16 = apply_updates(params16, updates, state)
        for key, master in flat(state.master).items():
            expected = np.asarray(flat(reference)[key])  # up to float32 rounding: the two programs fuse differently
            np.testing.assert_allclose(np.asarray(master), expected, rtol=1e-6, atol=1e-7, err_msg=key)
            assert master.dtype == jnp.float32
            np.testing.assert_array_equal(np.asarray(flat(params16)[key]), np.asarray(master.astype(jnp.bfloat16)))
    assert learning_rates(state) == learning_rates(plain_state)
    assert float32_params(params16, state) is state.master
    assert float32_params(reference, plain_state) is reference
