"""The training loop: a sharded jitted train step, Orbax checkpoints that resume exactly, metrics, eval, export.

One `Trainer.fit()` runs `trainer.num_steps` steps. Parameters and optimizer state live on the mesh under the
logical axis rules; each host feeds its own slice of every global batch. Every `save_every` steps one async
Orbax checkpoint holds the parameters, optimizer state, step, base RNG key and the Grain iterator state, so a
restarted run (same command) continues from the last finished checkpoint with the same batches, dropout masks
and losses as an uninterrupted run; a checkpoint that was still being written when the process died is ignored.
SIGTERM or SIGINT ends the run after the current step (on every host the same step) with a checkpoint of that step
(`TrainingInterrupted`). The resolved config is kept in the output folder: a rerun is checked against it
(`resume.check_rerun`), and metrics.jsonl and TensorBoard are cut back to the step it resumes from.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils
from tqdm import tqdm

from gliner_jax.benchmark_suite import evaluate_benchmark, read_benchmark
from gliner_jax.data_formats import read_examples
from gliner_jax.evaluation import evaluate_relations, evaluate_thresholds, sweep_scalars
from gliner_jax.model import GLiNER
from gliner_jax.sharding import avoid_cached_cpu_collectives, make_mesh, override_rules
from gliner_jax.text.collate import SHARED_LABEL_ARRAYS
from gliner_jax.training import data as data_lib
from gliner_jax.training.checkpoints import best_checkpoint, check_best_by, checkpoint_manager, checkpoint_scores
from gliner_jax.training.config import TrainConfig
from gliner_jax.training.decoder_data import DecoderBatches
from gliner_jax.training.loss import DECODER_TARGETS, RELATION_TARGETS, TOKEN_SPAN_TARGETS
from gliner_jax.training.model_init import ModelWordSplitter, build_model
from gliner_jax.training.optim import float32_params, learning_rates
from gliner_jax.training.resume import StopSignals, TrainingInterrupted, check_rerun, cut_metrics, save_config
from gliner_jax.training.step import build_train_program

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class StepTimer:
    """Tokens per second over the steps since the last `rate()` call."""

    tokens: int = 0
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def rate(self) -> float:
        now = time.perf_counter()
        rate = self.tokens / max(now - self.started, 1e-9)
        self.tokens, self.started = 0, now
        return rate


class Trainer:
    """Builds everything a `TrainConfig` describes and runs it with `fit()`."""

    def __init__(self, config: TrainConfig):
        avoid_cached_cpu_collectives()
        self.config = config
        run = config.trainer
        self.output_dir = Path(run.output_dir)
        self.is_chief = jax.process_index() == 0
        # Bad data and a refused rerun end before anything starts: the checkpoint manager's cleanup thread, the model.
        split = ModelWordSplitter(config.model)  # splits the texts of character-offset records
        if config.data.sources:
            source = data_lib.open_mixture(config.data.sources, strict=config.data.strict, split=split)
        else:
            source = data_lib.open_source(config.data.train, strict=config.data.strict, split=split)
        self.source_names = [part.name for part in source] if config.data.sources else []
        self.source_counts = np.zeros(len(self.source_names), np.int64)  # a mixture's records drawn per source
        checkpoints_dir = (self.output_dir / "checkpoints").absolute()
        saved = ocp.utils.checkpoint_steps(checkpoints_dir) if checkpoints_dir.is_dir() else []
        self.restore_data = check_rerun(self.output_dir, config, max(saved, default=None))
        self.checkpoints = checkpoint_manager(checkpoints_dir, run)
        built = build_model(config.model, run.seed)
        model, self.gliner_config, self.processor = built.model, built.config, built.processor
        self.tokenizer, self.labels_tokenizer = built.tokenizer, built.labels_tokenizer
        self.decoder_tokenizer = built.decoder_tokenizer
        decoder = None
        if self.gliner_config.is_decoder:
            if not self.gliner_config.generates_labels:  # gliner's decoder loss fails on its batches then
                raise NotImplementedError(
                    f"training a decoder model with decoder_mode={self.gliner_config.decoder_mode!r}: gliner's "
                    "training fails on it too; only decoder_mode 'span' trains"
                )
            decoder = DecoderBatches.of(self.gliner_config, self.decoder_tokenizer)

        self.mesh = make_mesh(config.mesh)
        logger.info(
            "mesh %s over %d devices in %d process(es)", dict(self.mesh.shape), self.mesh.size, jax.process_count()
        )
        rules = override_rules(config.rules)
        data_devices = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        if run.global_batch_size % data_devices:
            raise ValueError(
                f"trainer.global_batch_size={run.global_batch_size} is not divisible by the {data_devices} devices "
                "of the mesh's data and fsdp axes"
            )
        names = [*self.processor.collate_words([["a"]], [["a"]]).model_arrays(), "entities"]
        if self.gliner_config.is_relex:
            names += ["relations_valid", *RELATION_TARGETS]
        if self.gliner_config.represents_spans:
            names += list(TOKEN_SPAN_TARGETS)
        if decoder is not None:
            rows = ("decoder_input_ids", "decoder_words_mask")  # the decoder rows: with full_decoder_context only
            names += [name for name in DECODER_TARGETS if decoder.context or name not in rows]
        program = build_train_program(
            model,
            config.optimizer,
            config.loss,
            self.mesh,
            names,
            rules=rules,
            param_dtype=config.model.param_dtype,
            remat=config.model.remat,
            unroll_layers=config.model.unroll_layers,
            encoder_attributes=config.model.encoder_attributes,
        )
        self.params, self.opt_state, self.stats = program.params, program.opt_state, program.stats
        self.train_step, self.batch_shardings = program.step, program.batch_shardings
        self.eval_graphdef, self.rest = program.eval_graphdef, program.rest  # for host_model
        self.rng = np.asarray(jax.random.key_data(jax.random.key(run.seed)))  # host NumPy: the same on every host
        self.step = 0

        packing = None
        if config.data.packing and not self.processor.label_prompt:
            raise NotImplementedError(
                "data.packing is not supported for bi-encoders (their label table is shared by the whole batch)"
            )
        if self.gliner_config.precomputed_prompts_mode and self.gliner_config.is_relex:
            raise NotImplementedError(
                "training a relation model in precomputed_prompts_mode is not implemented (gliner's relation "
                "collator draws each example's labels anew, which do not match the stored prompts' order)"
            )
        if config.data.packing and self.gliner_config.fuse_layers:
            raise NotImplementedError(
                "data.packing is not supported with model fuse_layers=True (gliner weighs the layers by an average "
                "over the whole padded row)"
            )
        if config.data.packing:  # each host packs whole rows for each of its data shards
            packing = data_lib.Packing(config.data.row_length, max(1, data_devices // jax.process_count()))
        self.dataset = data_lib.make_train_dataset(
            source,
            self.processor,
            global_batch_size=run.global_batch_size,
            seed=run.seed,
            shuffle=config.data.shuffle,
            max_types=self.gliner_config.max_types,
            max_neg_type_ratio=self.gliner_config.max_neg_type_ratio,
            packing=packing,
            label_rows_multiple=data_devices,
            fixed_labels=self.gliner_config.precomputed_labels,
            decoder=decoder,
        )
        self.iterator = iter(self.dataset)
        self.dev = read_examples(config.data.dev, strict=config.data.strict)[0] if config.data.dev else None
        self.benchmark = read_benchmark(config.data.benchmark) if config.data.benchmark else None
        check_best_by(run.best_by, self.benchmark)

    def _train_state(self) -> dict[str, Any]:
        """What a checkpoint holds; BatchNorm statistics only where the network has any (a TuckER triples layer), so
        that other models' checkpoints keep their layout."""
        state = {"params": self.params, "opt_state": self.opt_state, "step": self.step, "rng": self.rng}
        return state | ({"stats": self.stats} if jax.tree.leaves(self.stats) else {})

    def restore_latest(self) -> bool:
        """Resume from the newest finished checkpoint, if any (its data position too, unless the data changed);
        returns whether one was loaded."""
        step = self.checkpoints.latest_step()
        if step is None:
            return False
        restored = self._restore(step, data=self.restore_data)
        state = restored["state"]
        self.params, self.opt_state, self.rng = state["params"], state["opt_state"], np.asarray(state["rng"])
        self.stats = state.get("stats", self.stats)
        self.step = int(state["step"])
        if self.step != step:
            raise RuntimeError(f"checkpoint {step} holds step {self.step}")
        logger.info("resumed from step %d", step)
        return True

    def _restore(self, step: int, *, data: bool) -> dict[str, Any]:
        """Checkpoint `step`'s train state (as arrays laid out like the current one) and, with `data`, the data
        position (into the iterator)."""
        items = {"state": ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, self._train_state()))}
        if data:
            items["data"] = grain.checkpoint.CheckpointRestore(self.iterator)
        return self.checkpoints.restore(step, args=ocp.args.Composite(**items))

    def _save(self, scores: Mapping[str, float]) -> None:
        """Checkpoint this step, carrying its `scores` (kept as Orbax metrics with `trainer.best_by`)."""
        self.checkpoints.save(
            self.step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(self._train_state()),
                data=grain.checkpoint.CheckpointSave(self.iterator),
            ),
            metrics=dict(scores),
            force=True,
        )

    def _global_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """One global array per input from every host's rows (hosts first agree on the bucket shapes); a
        bi-encoder's label table, which every host holds whole, is split over the devices from each host's copy."""
        if jax.process_count() > 1:
            batch = pad_to_common_shapes(batch, self.tokenizer.pad_token_id)
        arrays = {}
        for name, value in batch.items():
            sharding = self.batch_shardings[name]
            if name in SHARED_LABEL_ARRAYS:
                arrays[name] = jax.make_array_from_callback(value.shape, sharding, lambda index, v=value: v[index])
            else:
                arrays[name] = jax.make_array_from_process_local_data(sharding, value)
        return arrays

    def fit(self) -> dict[str, float]:
        """Train to `trainer.num_steps` (resuming from the last checkpoint), evaluate and export; returns the
        last logged metrics. SIGTERM or SIGINT: `TrainingInterrupted` once the current step is saved."""
        run = self.config.trainer
        with StopSignals() as signals:
            self.restore_latest()
            if jax.process_count() > 1:  # every host has compared the saved config before the chief replaces it
                multihost_utils.sync_global_devices("gliner-jax train: config compared")
            last = {}
            if self.is_chief:
                save_config(self.output_dir, self.config)
                last = cut_metrics(self.output_dir / "metrics.jsonl", self.step)
            stopped = self._train(last, signals)
        if stopped:
            raise TrainingInterrupted(self.step, signals.received or signal.SIGTERM)
        if run.export:
            self.export(self.output_dir / "final")
            if run.best_by is not None:
                self._export_best()
        return last

    def _export_best(self) -> None:
        """Export the parameters of the checkpoint with the best `trainer.best_by` score to OUTPUT/best."""
        best = best_checkpoint(self.checkpoints, self.config.trainer.best_by)
        if best is None:  # a rerun of a run finished without best_by
            logger.warning("no checkpoint has a %s score: nothing exported as best", self.config.trainer.best_by)
            return
        logger.info("best checkpoint: step %d, %s %.4f", best[0], self.config.trainer.best_by, best[1])
        self.export(self.output_dir / "best", self.host_model(self._restore(best[0], data=False)["state"]))

    def _stop_requested(self, signals: StopSignals) -> bool:
        """Whether any host received a stop signal, or JAX's preemption service (which takes SIGTERM before `fit`
        in a multi-process run) reached its sync point: the same answer on every host, so that all save this step."""
        received = signals.received
        if jax.process_count() > 1:
            received = multihost_utils.process_allgather(np.int32(received)).any()
        return bool(received) or self.checkpoints.reached_preemption(self.step)

    def _train(self, last: dict[str, float], signals: StopSignals) -> bool:
        """The steps up to `trainer.num_steps`, their metrics into `last`; whether a stop signal ended them."""
        run = self.config.trainer
        writer = self._writer()
        metrics_file = (self.output_dir / "metrics.jsonl").open("a") if self.is_chief else None
        timer, stopped = StepTimer(), False
        progress = tqdm(total=run.num_steps, initial=self.step, desc="train", unit="step", disable=not self.is_chief)
        try:
            while self.step < run.num_steps and not stopped:
                batch = next(self.iterator)
                self.source_counts = np.maximum(self.source_counts, batch.pop(data_lib.SOURCE_COUNTS, 0))
                timer.tokens += int((batch["attention_mask"] > 0).sum()) * jax.process_count()
                key = jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)
                self.params, self.opt_state, self.stats, metrics = self.train_step(
                    self.params, self.opt_state, self.stats, self._global_batch(batch), key
                )
                self.step += 1
                progress.update()
                final = self.step == run.num_steps
                values = {}
                if self.step % run.log_every == 0 or final:
                    values = self._train_metrics(metrics, timer.rate())
                    progress.set_postfix(loss=f"{values['loss']:.4g}", tok_s=f"{values['tokens_per_second']:,.0f}")
                evaluated = self.dev is not None or self.benchmark is not None
                if evaluated and (final or (run.eval_every and self.step % run.eval_every == 0)):
                    values |= self._evaluate()
                scores = checkpoint_scores(values) if run.best_by is not None else {}
                stopped = not final and self._stop_requested(signals)
                if final or stopped or scores or self.step % run.save_every == 0:
                    self._save(scores)
                if scores and (best := best_checkpoint(self.checkpoints, run.best_by, scores)):
                    values |= {"best/step": best[0], "best/score": best[1]}
                if values:
                    last |= values
                    self._record(values, writer, metrics_file)
        finally:
            progress.close()
            self.checkpoints.wait_until_finished()
            if metrics_file is not None:
                metrics_file.close()
            if writer is not None:
                writer.close()
        return stopped

    def _writer(self) -> Any:
        """The chief's TensorBoard writer: a new event file that hides the older files' events after this step."""
        if not self.is_chief:
            return None
        from tensorboardX import SummaryWriter

        directory = self.output_dir / "tensorboard"
        resumed = directory.is_dir() and any(directory.iterdir())
        return SummaryWriter(str(directory), purge_step=self.step + 1 if resumed else None)

    def _train_metrics(self, metrics: dict[str, jax.Array], tokens_per_second: float) -> dict[str, float]:
        values = {name: float(value) for name, value in (metrics | learning_rates(self.opt_state)).items()}
        counts = {f"data/{name}": float(n) for name, n in zip(self.source_names, self.source_counts, strict=True)}
        return values | {"tokens_per_second": tokens_per_second} | counts

    def _record(self, values: dict[str, float], writer: Any, metrics_file: Any) -> None:
        """TensorBoard scalars and one metrics.jsonl line for this step (chief only)."""
        if writer is not None:
            for name, value in values.items():
                writer.add_scalar(name if "/" in name else f"train/{name}", value, self.step)
            writer.flush()  # on disk with its metrics.jsonl line, should the process be killed
        if metrics_file is not None:
            metrics_file.write(json.dumps({"step": self.step, **values}) + "\n")
            metrics_file.flush()

    def host_model(self, state: Mapping[str, Any] | None = None) -> GLiNER:
        """The current parameters (or those of a restored train `state`) as an eval-mode `GLiNER` on this host
        (gathered from every process); the float32 master weights where the parameters are held in bfloat16."""
        state = self._train_state() if state is None else state
        params = multihost_utils.process_allgather(float32_params(state["params"], state["opt_state"]), tiled=True)
        stats = multihost_utils.process_allgather(state.get("stats", self.stats), tiled=True)
        model = nnx.merge(self.eval_graphdef, *jax.tree.map(jnp.asarray, (params, stats)), self.rest)
        return GLiNER(model, self.gliner_config, self.tokenizer, self.labels_tokenizer, self.decoder_tokenizer)

    def _evaluate(self) -> dict[str, float]:
        """Span P/R/F1 on the dev examples with all their labels, micro and per label, and the threshold sweep, from
        one model pass (a relation model: its entity and relation P/R/F1, "dev/..." and "dev_relations/..."); the
        benchmark's averages and per-dataset F1 (every host computes them; the chief shows progress bars and records
        them)."""
        run, model, values = self.config.trainer, self.host_model(), {}
        if self.dev is not None and self.gliner_config.is_relex:  # entities and relations at trainer.eval_threshold
            scores = evaluate_relations(model, self.dev, threshold=run.eval_threshold, batch_size=run.eval_batch_size)
            logger.info("step %d: dev entities %s, relations %s", self.step, scores.entities, scores.relations)
            values |= scores.entities.scalars("dev") | scores.relations.scalars("dev_relations")
        elif self.dev is not None:
            sweep = evaluate_thresholds(
                model,
                self.dev,
                [run.eval_threshold, *run.eval_thresholds],
                batch_size=run.eval_batch_size,
                progress=self.is_chief,
            )
            evaluation = sweep[run.eval_threshold]
            logger.info("step %d: dev %s", self.step, evaluation)
            values |= evaluation.scalars("dev")
            if run.eval_thresholds:
                values |= sweep_scalars({t: sweep[t] for t in run.eval_thresholds}, "dev")
                best, f1 = values["dev/best_threshold"], values["dev/best_f1"]
                logger.info("step %d: dev best threshold %g (F1 %.2f%%)", self.step, best, 100 * f1)
        if self.benchmark is not None:
            result = evaluate_benchmark(model, self.benchmark, progress=self.is_chief)
            logger.info("step %d: benchmark\n%s", self.step, result.table())
            values |= result.scalars("benchmark")
        return values

    def export(self, path: Path, model: GLiNER | None = None) -> None:
        """Write the gliner-compatible directory of `model` (default: the current parameters; the chief writes, every
        host joins the gather)."""
        model = self.host_model() if model is None else model
        if self.is_chief:
            model.save_pretrained(path, overwrite=True)  # a rerun replaces its own earlier export
            logger.info("exported to %s", path)


def pad_to_common_shapes(batch: dict[str, np.ndarray], pad_id: int) -> dict[str, np.ndarray]:
    """Pad every host's arrays (at the end of each axis) to the largest shape any host has, so that the
    hosts' bucket shapes, which depend on their own rows (and, packed, their number of rows and slots), form one
    global batch (a bi-encoder's label table is the same on every host, so it is left as it is). Padding is neutral:
    masks and validity flags 0, entity rows (0, 0, 0), input_ids the pad id; span_idx / span_mask grow by whole
    words, in the processor's order (start-major, then width)."""
    names = sorted(batch)
    shapes = np.array([dim for name in names for dim in batch[name].shape], np.int64)
    target = multihost_utils.process_allgather(shapes).reshape(-1, shapes.size).max(axis=0)
    padded, offset = {}, 0
    for name in names:
        value = batch[name]
        widths = [(0, int(t) - d) for t, d in zip(target[offset : offset + value.ndim], value.shape, strict=True)]
        offset += value.ndim
        padded[name] = np.pad(value, widths, constant_values=pad_id if name == "input_ids" else 0)
    return padded
