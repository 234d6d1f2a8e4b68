"""Relation extraction inference: gliner-jax against the `gliner` PyTorch package, side by side, on the CPU.

An offline relation model (gliner's UniEncoderSpanRelexGLiNER: markerV0 spans, relations_layer `dot`, gliner's own
head init on a random encoder of deberta-v3 shapes with a locally trained tokenizer) is built with gliner; the same
texts of 60-120 words, 5 entity labels and 3 relation labels go through both libraries with the same batch size,
each engine in a fresh process (after a warm-up pass over the same texts). The entity threshold keeps at most
`--entities` spans of each text (gliner's scores), every entity pair is scored (adjacency threshold 0) and the relation
threshold keeps half of the relations gliner then finds, so both engines have entities and relations to agree on.
Reported: texts/s of each, their ratio, and whether entities and relations agree (same items in the same order,
scores within 1e-5). Pin both engines to the same cores with `taskset` (torch then uses as many threads as the
process may run on).

    taskset -c 1 python -m gliner_jax.bench relations [--texts 32] [--batch-size 8] [--size small|toy]
                                                      [--entities 16] [--json PATH]
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gliner_jax.bench import argument_parser
from gliner_jax.bench.entities import agree, simplify
from gliner_jax.bench.runner import in_fresh_process
from gliner_jax.bench.sizes import GLINER_HEAD, encoder_dict
from gliner_jax.testing.builders import benchmark_texts, build_backbone, build_reference, relation_thresholds

LABELS = ["person", "organization", "location", "date", "award"]
RELATIONS = ["works for", "located in", "founded by"]
Relation = tuple[int, int, str, float]  # (head entity index, tail entity index, relation, score)


def simplify_relations(relations: Sequence[Sequence[dict[str, Any]]]) -> list[list[Relation]]:
    """Each text's relations as (head index, tail index, relation, score) tuples."""
    return [
        [(r["head"]["entity_idx"], r["tail"]["entity_idx"], r["relation"], float(r["score"])) for r in row]
        for row in relations
    ]


def run_engine(engine: str, directory: str, texts: list[str], options: dict, batch_size: int) -> dict[str, Any]:
    """Time one engine on the CPU (after a warm-up pass over the same texts): texts/s, entities, relations."""
    if engine == "torch":
        import gliner
        import torch

        torch.set_num_threads(len(os.sched_getaffinity(0)))
        model = gliner.GLiNER.from_pretrained(directory, local_files_only=True)
    else:
        import jax

        jax.config.update("jax_platforms", "cpu")
        from gliner_jax import GLiNER

        model = GLiNER.from_pretrained(directory)

    def predict() -> tuple[list, list]:
        return model.inference(texts, LABELS, relations=RELATIONS, batch_size=batch_size, **options)

    predict()  # warm-up (jit compilation for jax; allocator warm-up for torch)
    start = time.perf_counter()
    entities, relations = predict()
    seconds = time.perf_counter() - start
    return {
        "texts_per_s": len(texts) / seconds,
        "entities": simplify(entities),
        "relations": simplify_relations(relations),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark with command-line arguments `argv`."""
    parser = argument_parser(__name__, __doc__)
    parser.add_argument("--texts", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", choices=("small", "toy"), default="small", help="deberta-v3-small or a toy encoder")
    parser.add_argument("--entities", type=int, default=16, help="most spans of a text above the entity threshold")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)

    texts = benchmark_texts(args.texts)
    with tempfile.TemporaryDirectory() as root:
        encoder = encoder_dict(args.size)
        backbone = build_backbone(Path(root) / "backbone", encoder, tokenizer=dict(vocab_size=1000, model_type="bpe"))
        directory = Path(root) / "relex"
        head = dict(span_mode="markerV0", relations_layer="dot", **GLINER_HEAD)
        reference = build_reference(backbone, directory, logit_scale=1.0, noise=0.0, **head)
        options = relation_thresholds(reference, texts, LABELS, RELATIONS, args.entities, args.batch_size)
        del reference
        result = {
            engine: in_fresh_process(run_engine, engine, str(directory), texts, options, args.batch_size, name=engine)
            for engine in ("torch", "jax")
        }
    torch_run, jax_run = result["torch"], result["jax"]
    same_entities = agree(torch_run["entities"], jax_run["entities"], 1e-5)
    same_relations = all(
        [r[:3] for r in ref] == [r[:3] for r in ours]
        and all(abs(a[3] - b[3]) <= 1e-5 for a, b in zip(ref, ours, strict=True))
        for ref, ours in zip(torch_run["relations"], jax_run["relations"], strict=True)
    )
    ratio = jax_run["texts_per_s"] / torch_run["texts_per_s"]
    entities = sum(map(len, torch_run["entities"]))
    relations = sum(map(len, torch_run["relations"]))
    cores = len(os.sched_getaffinity(0))
    print(
        f"{args.texts} texts of 60-120 words, {len(LABELS)} labels, {len(RELATIONS)} relations, batch "
        f"{args.batch_size}, deberta-v3-{args.size} shapes, relations_layer dot, CPU ({cores} core(s))\n"
        f"gliner {torch_run['texts_per_s']:.2f} texts/s, gliner-jax {jax_run['texts_per_s']:.2f} texts/s: "
        f"{ratio:.2f}x\nsame entities: {same_entities} ({entities}), same relations: {same_relations} ({relations})"
    )
    if args.json:
        report = {
            "texts": args.texts,
            "batch_size": args.batch_size,
            "size": args.size,
            "cores": cores,
            "torch_texts_per_s": torch_run["texts_per_s"],
            "jax_texts_per_s": jax_run["texts_per_s"],
            "ratio": ratio,
            "same_entities": same_entities,
            "same_relations": same_relations,
            "entities": entities,
            "relations": relations,
        }
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
