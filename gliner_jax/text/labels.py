"""Entity labels as the user gives them (a list, a {label: description} mapping, or one of those per text), checked
and normalised to the {prompt: label} sets the model reads, as gliner 0.2.29's `inference` takes them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

LabelSet = Sequence[str] | Mapping[str, str]  # labels, or {label: description}
Labels = LabelSet | Sequence[LabelSet]  # one label set for every text, or one per text


def normalize_labels(labels: Labels, num_texts: int, *, strict: bool = True) -> list[dict[str, str]]:
    """One label set per text, as {prompt: label}: the prompt the model reads for each class, in class order, and
    the label an entity of that class is returned with.

    `labels` is one label set for all texts or one per text (a list or tuple of them, one per text). A label set is
    a list of labels, deduplicated keeping the first occurrence (each label is its own prompt), or a
    {label: description} mapping, whose descriptions are the prompts: as gliner 0.2.29's `inference` takes them.

    Raises ValueError for anything else: a bare string, a count of label sets other than `num_texts`, a label or
    description that is not a string, two labels of a mapping with the same description, and, when `strict` (not
    for training rows, which gliner's collator takes as they come), an empty label set or a blank label or
    description."""
    if isinstance(labels, str):
        raise ValueError(f"labels must be a list of label strings, not the string {labels!r}")
    per_text = (
        not isinstance(labels, Mapping)
        and bool(labels)
        and all(isinstance(group, list | tuple | Mapping) for group in labels)
    )
    if per_text and len(labels) != num_texts:
        raise ValueError(f"got {len(labels)} label lists for {num_texts} texts")
    label_sets = list(labels) if per_text else [labels] * num_texts
    return [
        _label_set(label_set, f" for text {index}" if per_text else "", strict)
        for index, label_set in enumerate(label_sets)
    ]


def _label_set(labels: LabelSet, where: str, strict: bool) -> dict[str, str]:
    """{prompt: label} of one label list or {label: description} mapping (see `normalize_labels`)."""
    described = isinstance(labels, Mapping)
    pairs = [(prompt, label) for label, prompt in labels.items()] if described else [(label, label) for label in labels]
    if strict and not pairs:
        raise ValueError(f"the label list{where} is empty")
    what = "labels and descriptions" if described else "labels"
    for value in (value for pair in pairs for value in pair):
        if not isinstance(value, str) or (strict and not value.strip()):
            raise ValueError(f"{what} must be non-empty strings; got {value!r}{where}")
    prompts = dict(pairs)  # a repeated label keeps its first place
    if described and len(prompts) < len(pairs):
        raise ValueError(f"each label needs its own description{where}; got {dict(labels)!r}")
    return prompts
