"""Scoring of generated text, per the protocol (protocol.md, "Label matching" and the metrics).

Pure functions, plus the thin lm-eval hooks (``process_*`` and ``spearman_aggregation``) that the
task YAMLs reference through each task folder's ``utils.py``.

Label sets. A label set is a sequence of classes; each class is either one string or a list of
strings whose first element is the canonical label and the rest are accepted aliases (the
reference's alternative spellings, e.g. ``["not violence", "not_violence"]``). A document carries
its label set in ``mb_labels`` (list of alias lists) and its accepted canonical answers in
``mb_golds``; see ``merge_bench.data.build_docs``.

Decisions where the protocol is silent:
- Word boundaries are "no word character (``\\w``: letters, digits, underscore) right before or right
  after", so labels that begin or end with punctuation, like ``(A)`` or ``Sci/Tech``, work, and
  ``single_s_coord`` does not match inside ``single_s_coord_anaphora``. A space inside a label
  matches any run of whitespace.
- The first number: an optional sign, digits, an optional decimal part (``".5"`` too). No number
  gives 0.0, as in the reference. Spearman of a constant vector (or of fewer than two pairs) is 0.0,
  as in the reference, rather than NaN.
- Token F1 is SQuAD-style: lower-cased ``\\w+`` tokens, multiset overlap, the best over the gold
  references; no article removal (a qasc gold may itself be "the").
- "Gold contained in output" uses the same word boundaries as label matching (a gold "Mary" is not
  found inside "Maryland"), case-insensitively with whitespace runs collapsed; any reference counts
  (Natural Instructions' own evaluation scores against every reference; the STAR reference reads only
  the first, which ``--protocol reference`` reproduces).
- Options (mistral dream): an answer that *starts* with an option letter, bare or bracketed ("A", "A)",
  "a.", "(A)", then ")", ".", ":", ",", a line break or the end), is that option, as the STAR reference
  counts it; otherwise the first bracketed option anywhere, by label matching. A bare letter followed by a
  space ("A man ...", "a cat") is not taken as an answer: the reference's plain ``startswith("a")`` would.
- Spearman golds (stsb) are rounded to one decimal, as the STAR reference does: the hub stores the scores
  as float32 (2.4 reads 2.4000000953674316), and the rounding also merges scores such as 3.75 and 3.8
  into one rank.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache
from typing import Iterable, Sequence

LabelSpec = Sequence["str | Sequence[str]"]

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)")
_TOKEN = re.compile(r"\w+")


def normalize(text: str) -> str:
    """Case-folded, with every whitespace run collapsed to one space and the ends stripped."""
    return " ".join(text.split()).casefold()


def label_groups(labels: LabelSpec) -> tuple[tuple[str, ...], ...]:
    """Canonical form of a label set: a tuple of classes, each a tuple (canonical, *aliases).

    Raises ValueError for an empty set, an empty label, or one surface form given to two classes.
    """
    if isinstance(labels, str) or not labels:
        raise ValueError(f"a label set must be a non-empty list of labels, got {labels!r}")
    groups = []
    owner: dict[str, str] = {}
    for entry in labels:
        forms = (entry,) if isinstance(entry, str) else tuple(entry)
        if not forms or any(not isinstance(f, str) or not f.strip() for f in forms):
            raise ValueError(f"label set {list(labels)!r}: class {entry!r} must be a non-empty string "
                             "or a non-empty list of non-empty strings")
        for form in forms:
            key = normalize(form)
            if key in owner and owner[key] != forms[0]:
                raise ValueError(f"label set {list(labels)!r}: {form!r} is given to both {owner[key]!r} "
                                 f"and {forms[0]!r}")
            owner[key] = forms[0]
        groups.append(forms)
    return tuple(groups)


def _form_pattern(form: str) -> str:
    return r"\s+".join(re.escape(part) for part in form.split())


@lru_cache(maxsize=1024)
def _matcher(groups: tuple[tuple[str, ...], ...]) -> tuple[re.Pattern, tuple[str, ...]]:
    # One capturing group per surface form, longest first: at the leftmost matching position the
    # regex engine tries the alternatives in order, so "not violence" wins over "violence".
    forms = sorted({(form, g[0]) for g in groups for form in g}, key=lambda fc: (-len(normalize(fc[0])), fc[0]))
    alternation = "|".join(f"({_form_pattern(form)})" for form, _ in forms)
    pattern = re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", re.IGNORECASE)
    return pattern, tuple(canonical for _, canonical in forms)


def match_label(text: str, labels: LabelSpec) -> str | None:
    """The canonical label whose form occurs first in ``text`` (case-insensitive, at word boundaries,
    longest form first at a given position); None when no label occurs."""
    pattern, canonicals = _matcher(label_groups(labels))
    found = pattern.search(text)
    if found is None:
        return None
    return canonicals[found.lastindex - 1]


def match_option(text: str, labels: LabelSpec) -> str | None:
    """The option an answer gives (labels like "(A)", "(B)"): a leading option letter, else label matching."""
    groups = label_groups(labels)
    letters = {g[0].strip("()").casefold(): g[0] for g in groups}
    lead = re.match(r"\s*\(?([^\W\d_])(?:\)|[.:,]|\s*\n|\s*$)", text)
    if lead is not None and lead.group(1).casefold() in letters:
        return letters[lead.group(1).casefold()]
    return match_label(text, groups)


def first_number(text: str, clamp: tuple[float, float] | None = None) -> float:
    """The first number in ``text`` (0.0 when there is none), optionally clamped to [lo, hi]."""
    found = _NUMBER.search(text)
    value = float(found.group()) if found else 0.0
    if clamp is not None:
        lo, hi = clamp
        value = min(max(value, lo), hi)
    return value


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        mean_rank = (start + end) / 2 + 1
        for k in range(start, end + 1):
            ranks[order[k]] = mean_rank
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ: the Pearson correlation of the average ranks. 0.0 when undefined."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs two sequences of equal length, got {len(x)} and {len(y)}")
    if any(not math.isfinite(v) for v in (*x, *y)):
        raise ValueError("spearman got a non-finite value")
    if len(x) < 2:
        return 0.0
    rx, ry = average_ranks(x), average_ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0.0 or syy == 0.0:
        return 0.0
    return sxy / math.sqrt(sxx * syy)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.casefold())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 between two strings (both empty: 1.0; one empty: 0.0)."""
    pred, gold = tokens(prediction), tokens(reference)
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def best_token_f1(prediction: str, references: Iterable[str]) -> float:
    refs = list(references)
    if not refs:
        raise ValueError("token F1 needs at least one reference")
    return max(token_f1(prediction, r) for r in refs)


def contains_gold(prediction: str, references: Iterable[str]) -> bool:
    """Whether any non-empty reference occurs in ``prediction`` as a whole (word-bounded) phrase."""
    text = normalize(prediction)
    for ref in references:
        key = normalize(ref)
        if key and re.search(rf"(?<!\w){_form_pattern(key)}(?!\w)", text):
            return True
    return False


# ---- lm-eval hooks: (doc, results) -> {metric: value}; results holds the one generated string.

def _generated(results: Sequence[str]) -> str:
    if len(results) != 1:
        raise ValueError(f"expected one generation per document, got {len(results)}")
    return results[0]


def process_label(doc: dict, results: Sequence[str]) -> dict[str, float]:
    """Accuracy: the first label in the generation is one of the document's gold labels."""
    predicted = match_label(_generated(results), doc["mb_labels"])
    return {"acc": float(predicted is not None and predicted in doc["mb_golds"])}


def process_option(doc: dict, results: Sequence[str]) -> dict[str, float]:
    """Accuracy for lettered options (``match_option``)."""
    predicted = match_option(_generated(results), doc["mb_labels"])
    return {"acc": float(predicted is not None and predicted in doc["mb_golds"])}


def process_contains(doc: dict, results: Sequence[str]) -> dict[str, float]:
    return {"acc": float(contains_gold(_generated(results), doc["mb_golds"]))}


def process_token_f1(doc: dict, results: Sequence[str]) -> dict[str, float]:
    return {"f1": best_token_f1(_generated(results), doc["mb_golds"])}


def gold_score(doc: dict) -> float:
    """A Spearman task's gold, rounded to one decimal as the STAR reference rounds it."""
    return round(float(doc["mb_target"]), 1)


def process_number(doc: dict, results: Sequence[str]) -> dict[str, tuple[float, float]]:
    """(predicted, gold) for Spearman; the first number, unclamped (the flan reference)."""
    return {"spearman": (first_number(_generated(results)), gold_score(doc))}


def process_number_clamped(doc: dict, results: Sequence[str]) -> dict[str, tuple[float, float]]:
    """(predicted, gold) for Spearman; the first number clamped to [0, 5] (the llama reference)."""
    return {"spearman": (first_number(_generated(results), clamp=(0.0, 5.0)), gold_score(doc))}


def spearman_aggregation(items: Sequence[tuple[float, float]]) -> float:
    """lm-eval aggregation over the (predicted, gold) pairs of a task."""
    pairs = list(items)
    return spearman([p for p, _ in pairs], [g for _, g in pairs])
