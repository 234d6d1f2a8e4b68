"""Entities for a corpus file, streamed: texts from a file (plain lines, JSONL, or a JSON list of records) through a
model's inference pipeline into JSONL, one line per text in input order: the text's record (a plain line becomes
{"text": line}) with its "entities", and with a relation model asked for relations its "relations" (gliner's dicts:
head, tail, relation, score). Memory holds a few blocks of lines, whatever the size of the file.

Lines are taken in blocks of `block_lines` lines (by line number); a block's texts are one pipeline chunk, so a
text's batch, and with it its result, is the same in every run. Process p of N takes blocks p, p + N, p + 2N, ...

The lines go to OUTPUT.partial, renamed to OUTPUT when it is complete: an existing OUTPUT (replaced with
`overwrite`) is left as it is until then. An OUTPUT that is the input file (by any path or link) is refused.

Resuming: after each block the partial output is flushed to disk, then a progress file (OUTPUT.progress.json,
replaced atomically) records its size and where reading goes on. Rerunning the same job cuts the partial output back
to that size and continues: an interrupted run, even one killed with SIGKILL, ends with the file an uninterrupted
run writes. The progress file is removed when the output is in place.

With N > 1 processes, process p writes OUTPUT.part-P-of-N, each line led by its input line number and a tab; when
every part is complete, process 0 merges them in input order into OUTPUT (`merge_parts`) and removes them.

Bad lines (not UTF-8, not JSON, a record without text) are reported with their line number and skipped, and
counted; with `strict` the first one stops the job with a ValueError.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import heapq
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from tqdm.auto import tqdm

from gliner_jax.data_formats import TextLine, count_text_lines, read_text_lines, record_text
from gliner_jax.label_generation import GenerationOptions
from gliner_jax.model import GLiNER

PROGRESS_SUFFIX = ".progress.json"
PARTIAL_SUFFIX = ".partial"


@dataclasses.dataclass(frozen=True)
class PredictOptions:
    """What `GLiNER.inference_stream` is asked, the same for every text: with `relations` (a relation extraction
    model's relation labels), relations too, kept above `adjacency_threshold` and `relation_threshold` (default
    `threshold`)."""

    labels: list[str]
    threshold: float = 0.5
    flat_ner: bool = True
    multi_label: bool = False
    batch_size: int = 8
    relations: list[str] | None = None
    adjacency_threshold: float | None = None
    relation_threshold: float | None = None
    generation: GenerationOptions | None = None  # a decoder model's generation options (None: the defaults)


def check_relations(model: GLiNER, options: PredictOptions) -> None:
    """ValueError when a relation extraction model is asked for no relations, or another model for relations."""
    if model.config.is_relex and not options.relations:
        raise ValueError("the model extracts relations: pass --relations (comma-separated relation labels)")
    if not model.config.is_relex and options.relations:
        raise ValueError("--relations: the model is not a relation extraction model (config.relations_layer)")


@dataclasses.dataclass(frozen=True)
class Share:
    """Which blocks of lines one process takes: blocks `index`, `index + count`, ... of `block_lines` lines."""

    block_lines: int = 1024
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.block_lines < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"bad share of lines: {self}")

    def takes(self, number: int) -> bool:
        """Whether line `number` (1-based) is in one of this process's blocks."""
        return (number - 1) // self.block_lines % self.count == self.index


@dataclasses.dataclass
class Block:
    """The lines of one block that have text or a problem, and where reading goes on after it."""

    lines: list[TextLine]
    next_line: int
    next_offset: int


@dataclasses.dataclass
class Counts:
    """Of this process's lines: texts annotated, bad lines skipped, and the first few of those by number."""

    texts: int = 0
    skipped: int = 0
    skipped_lines: list[int] = dataclasses.field(default_factory=list)

    def add(self, block: Block) -> None:
        bad = [line.number for line in block.lines if line.record is None]
        self.texts += len(block.lines) - len(bad)
        self.skipped += len(bad)
        self.skipped_lines = (self.skipped_lines + bad)[:10]


@contextlib.contextmanager
def erased_on_error(bar: tqdm) -> Iterator[tqdm]:
    """`bar`, closed at the end, and erased when an error ends the run: its one `error:` line stands alone."""
    with bar:
        try:
            yield bar
        except BaseException:
            bar.leave = False
            raise


def print_above_bar(message: str) -> None:
    """Print to stderr above a progress bar."""
    tqdm.write(message, file=sys.stderr)


def problem_handler(source: str, strict: bool, report: Callable[[str], None]) -> Callable[[TextLine], None]:
    """What to do with a bad line of `source`: raise ValueError naming it (`strict`), or report it as skipped."""

    def on_problem(line: TextLine) -> None:
        message = f"{source}:{line.number}: {line.problem}"
        if strict:
            raise ValueError(message)
        report(f"warning: {message}; skipped")

    return on_problem


def own_blocks(lines: Iterable[TextLine], share: Share) -> Iterator[Block]:
    """This process's blocks of `lines`, in order; each is complete when a line of a later block (or the end)
    shows up."""
    current, kept, last = None, [], None
    for line in lines:
        block = (line.number - 1) // share.block_lines
        if current is not None and block != current and share.takes(kept[0].number):
            yield Block(kept, last.number + 1, last.end)
        if block != current:
            current, kept = block, []
        kept.append(line)
        last = line
    if kept and share.takes(kept[0].number):
        yield Block(kept, last.number + 1, last.end)


def annotate(
    model: GLiNER,
    lines: Iterable[TextLine],
    options: PredictOptions,
    share: Share,
    on_problem: Callable[[TextLine], None],
) -> Iterator[tuple[Block, list[dict]]]:
    """(block, its output records) for each of this process's blocks: each line with text gives its record with
    "entities" (and "relations" when `options` has relations); `on_problem` is told of each bad line (it may raise
    to stop)."""
    pending: collections.deque[Block] = collections.deque()

    def chunks() -> Iterator[list[str]]:  # runs in the pipeline's host thread, ahead of the results
        for block in own_blocks(lines, share):
            for line in block.lines:
                if line.record is None:
                    on_problem(line)
            pending.append(block)
            yield [record_text(line.record) for line in block.lines if line.record is not None]

    asked = (options.threshold, options.flat_ner, options.multi_label, options.batch_size)
    thresholds = dict(adjacency_threshold=options.adjacency_threshold, relation_threshold=options.relation_threshold)
    if options.relations:
        results = model.inference_stream(chunks(), options.labels, *asked, relations=options.relations, **thresholds)
    else:
        found_stream = model.inference_stream(chunks(), options.labels, *asked, generation=options.generation)
        results = ((found, None) for found in found_stream)
    for found, relations in results:
        block = pending.popleft()
        records = [line.record for line in block.lines if line.record is not None]
        keys = [{"entities": entities} for entities in found]
        if relations is not None:
            for key, text_relations in zip(keys, relations, strict=True):
                key["relations"] = text_relations
        yield block, [{**record, **key} for record, key in zip(records, keys, strict=True)]


def part_path(output: Path, index: int, count: int) -> Path:
    """Where process `index` of `count` writes its lines."""
    return output.with_name(f"{output.name}.part-{index:05d}-of-{count:05d}")


def progress_path(path: Path) -> Path:
    return path.with_name(path.name + PROGRESS_SUFFIX)


def _work_paths(output: Path, share: Share) -> tuple[Path, Path]:
    """Where this process writes its lines, and its progress file."""
    if share.count == 1:
        return output.with_name(output.name + PARTIAL_SUFFIX), progress_path(output)
    part = part_path(output, share.index, share.count)
    return part, progress_path(part)


def refuse_output_over_input(outputs: Iterable[Path], inputs: Iterable[str | Path | None]) -> None:
    """ValueError when one of `outputs` is one of the existing `inputs` (the same path, a symbolic or a hard link);
    None among `inputs` is skipped."""
    sources = [Path(given) for given in inputs if given is not None]
    for output in outputs:
        for source in sources:
            if source.exists() and output.exists() and os.path.samefile(source, output):
                raise ValueError(f"--output {output} is the input file {source}: choose another output")


@dataclasses.dataclass
class _Progress:
    """What a progress file holds: the job it belongs to, the output's committed size, where reading goes on."""

    job: dict[str, Any]
    size: int = 0
    next_line: int = 1
    next_offset: int = 0
    counts: Counts = dataclasses.field(default_factory=Counts)
    complete: bool = False

    def save(self, path: Path) -> None:
        temporary = path.with_name(path.name + ".tmp")
        with temporary.open("w") as file:
            json.dump(dataclasses.asdict(self), file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: Path) -> _Progress:
        values = json.loads(path.read_text())
        return cls(**{**values, "counts": Counts(**values["counts"])})


def annotate_file(
    model: GLiNER,
    source: str | Path,
    output: str | Path,
    options: PredictOptions,
    *,
    share: Share = Share(),
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    job: dict[str, Any] | None = None,
    barrier: Callable[[], None] | None = None,
    report: Callable[[str], None] = print_above_bar,
    text_format: str = "auto",
) -> Counts:
    """Write the entities of every text of `source` (read in `text_format`, see
    `data_formats.resolve_text_format`) to `output` (see the module doc), resuming an interrupted run
    of the same job. `job` identifies the job in the progress file besides the input, options and share (e.g. the
    model); a progress file of another job is refused. With several processes, `barrier` waits for all of them
    before process 0 merges the parts. Returns this process's counts. Raises ValueError, before anything is
    written, for an output that is the input, one that exists without a progress file (unless `overwrite`),
    another job's progress, or relations asked of the wrong model (`check_relations`); and for a bad line with
    `strict`."""
    check_relations(model, options)
    source, output = Path(source), Path(output)
    target, saved = _work_paths(output, share)
    refuse_output_over_input((output, target, saved), [source])
    identity = {
        "input": str(source.resolve()),
        "format": text_format,
        "options": dataclasses.asdict(options),
        "share": dataclasses.asdict(share),
        **(job or {}),
    }
    state = _start(target, saved, output, identity, overwrite)
    if not state.complete:
        _run(model, source, target, saved, options, share, state, strict, progress, report, text_format)
        state.complete = True
        state.save(saved)
    if share.count > 1:
        if barrier is not None:
            barrier()
        if share.index == 0:
            merge_parts(output, share.count)
    else:
        if target.exists():  # not yet renamed by a run killed after completing it
            os.replace(target, output)
        saved.unlink()
    return state.counts


def _start(target: Path, saved: Path, output: Path, identity: dict[str, Any], overwrite: bool) -> _Progress:
    """The progress of this job writing `target`: resumed from its progress file `saved`, or fresh. `overwrite`
    drops an earlier run's partial output (never `output` itself: the new one replaces it once complete)."""
    if overwrite:
        for path in (saved, target):
            path.unlink(missing_ok=True)
    if saved.exists():
        state = _Progress.load(saved)
        if state.job != identity:
            keys = identity.keys() | state.job.keys()
            changed = sorted(key for key in keys if identity.get(key) != state.job.get(key))
            raise ValueError(
                f"{saved} belongs to another job ({', '.join(changed)} differ): rerun that job to finish it, "
                "or pass --overwrite to start this one afresh"
            )
        if state.complete:
            return state
        if state.size == 0:
            target.touch()  # a run killed between writing its progress file and creating its output
        if not target.exists() or target.stat().st_size < state.size:
            raise ValueError(f"{target} is shorter than {saved} records: it was changed; pass --overwrite")
        return state
    for path in () if overwrite else (output, target):
        if path.exists():
            raise ValueError(f"{path} exists: remove it, choose another output, or pass --overwrite")
    state = _Progress(identity)
    target.parent.mkdir(parents=True, exist_ok=True)
    state.save(saved)
    target.touch()
    return state


def _run(
    model: GLiNER,
    source: Path,
    target: Path,
    saved: Path,
    options: PredictOptions,
    share: Share,
    state: _Progress,
    strict: bool,
    progress: bool,
    report: Callable[[str], None],
    text_format: str,
) -> None:
    """Annotate from where `state` stands to the end of `source`, committing after each block. The progress bar
    counts the lines of the file passed (every process passes all of them) and shows this process's texts/s."""
    lines = read_text_lines(source, first=state.next_line, offset=state.next_offset, text_format=text_format)
    total = count_text_lines(source, text_format)
    bar = tqdm(total=total, initial=state.next_line - 1, unit="line", desc="predict", disable=not progress)
    annotated = annotate(model, lines, options, share, problem_handler(str(source), strict, report))
    with erased_on_error(bar), target.open("r+b") as file:
        file.truncate(state.size)
        file.seek(state.size)
        for block, records in _with_progress(annotated, bar):
            numbers = [line.number for line in block.lines if line.record is not None]
            file.write(_jsonl(records, numbers if share.count > 1 else None).encode("utf-8"))
            file.flush()
            os.fsync(file.fileno())
            state.counts.add(block)
            state.size, state.next_line, state.next_offset = file.tell(), block.next_line, block.next_offset
            state.save(saved)
        bar.update(total - bar.n)  # other processes' blocks and blank lines after this process's last text


def _with_progress(annotated: Iterable[tuple[Block, list[dict]]], bar: tqdm) -> Iterator[tuple[Block, list[dict]]]:
    """`annotated`, moving `bar` to the line after each block and showing the texts per second."""
    started, texts = time.perf_counter(), 0
    for block, records in annotated:
        yield block, records
        texts += len(records)
        bar.update(block.next_line - 1 - bar.n)
        bar.set_postfix(texts_s=f"{texts / max(time.perf_counter() - started, 1e-9):,.0f}")


def _jsonl(records: list[dict], numbers: list[int] | None) -> str:
    """JSON lines of `records`, each led by its input line number and a tab when `numbers` are given."""
    lines = [json.dumps(record, ensure_ascii=False) for record in records]
    if numbers is not None:
        lines = [f"{number}\t{line}" for number, line in zip(numbers, lines, strict=True)]
    return "".join(line + "\n" for line in lines)


def write_jsonl(
    model: GLiNER,
    lines: Iterable[TextLine],
    options: PredictOptions,
    out: IO[str],
    *,
    source: str,
    strict: bool = False,
    progress: bool = True,
    total: int | None = None,
    report: Callable[[str], None] = print_above_bar,
) -> Counts:
    """Stream the entities of `lines` to `out` as JSONL, without resuming (e.g. stdin to stdout); the progress bar
    counts up to `total` lines (`count_text_lines` of a file) where it is known. ValueError for relations asked of
    the wrong model (`check_relations`)."""
    check_relations(model, options)
    counts = Counts()
    annotated = annotate(model, lines, options, Share(), problem_handler(source, strict, report))
    with erased_on_error(tqdm(total=total, unit="line", desc="predict", disable=not progress)) as bar:
        for block, records in _with_progress(annotated, bar):
            out.write(_jsonl(records, None))
            counts.add(block)
        if total is not None:
            bar.update(total - bar.n)  # blank lines after the last text
    out.flush()
    return counts


def merge_parts(output: str | Path, count: int) -> None:
    """Merge the complete parts of `count` processes into `output`, in input line order, and remove the parts and
    their progress files. Raises ValueError when a part is missing or incomplete."""
    output = Path(output)
    parts = [part_path(output, index, count) for index in range(count)]
    for part in parts:
        saved = progress_path(part)
        if not part.exists() or not saved.exists() or not _Progress.load(saved).complete:
            raise ValueError(f"{part} is missing or incomplete: rerun the job on every process")
    temporary = output.with_name(output.name + ".tmp")
    files = [part.open(encoding="utf-8") for part in parts]
    try:
        numbered = [((int(line.partition("\t")[0]), line.partition("\t")[2]) for line in file) for file in files]
        with temporary.open("w", encoding="utf-8") as out:
            for _, line in heapq.merge(*numbered):
                out.write(line)
            out.flush()
            os.fsync(out.fileno())
    finally:
        for file in files:
            file.close()
    os.replace(temporary, output)
    for part in parts:
        part.unlink()
        progress_path(part).unlink()
