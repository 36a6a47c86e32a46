#!/usr/bin/env python
"""Generate the embedded ``tiny`` task suite: seeded, offline, byte-for-byte reproducible.

Writes ``<out>/merge-bench/tiny_<short>/default/{train,validation,test}.jsonl`` (fields ``id``, ``input``,
``output``: the Lots-of-LoRAs schema) and ``<out>/SHA256SUMS``. ``--check`` regenerates into a temporary
directory and compares with the committed files instead of writing.

Design (from the prototype's measurements, shared/notes/embedded-suite.md):
- six tasks with different answer vocabularies, so that merged adapters interfere: a 2-label sentiment
  task decided by the closing sentence, 4 news topics, 3-way entailment, a yes/no membership check on a 3-row table,
  a span task (a name from the passage: who gave / who received) and a digit task (1-9: the digit that
  occurs twice; sums gave no signal after merging);
- labels cycle while items are drawn, so every split is balanced to within one item per label;
- prompts are short (evaluation cost grows with prompt length) and end with the instruction and the
  answer options; answers are single labels for merge-bench's label matching;
- inputs are unique across all splits of a task (no train prompt equals a test prompt).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

SEED = 20261122
SPLITS = (("test", 200), ("validation", 100), ("train", 500))
DATASET_PREFIX = "merge-bench/tiny_"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tasks" / "tiny" / "data"

NAMES = ("Anna", "Ben", "Carla", "David", "Emma", "Felix", "Grace", "Hugo", "Ida", "Jonas", "Kara", "Leo",
         "Maya", "Nico", "Olga", "Paul", "Rosa", "Sam", "Tina", "Victor")
CITIES = ("Paris", "Rome", "Berlin", "Madrid", "Vienna", "Oslo", "Lisbon", "Prague", "Dublin", "Athens")

Generator = Callable[[random.Random, str], str]


@dataclass(frozen=True)
class TaskSpec:
    short: str
    labels: tuple[str, ...]
    make: Generator  # (rng, gold label) -> input text


# --- sentiment: the closing sentence decides; earlier sentences often say the opposite -------------------
_ASPECT = {
    "positive": ("The staff was friendly", "The room was spotless", "The food arrived hot", "Delivery was fast",
                 "The screen is bright", "The price was fair", "The seats were comfortable", "The battery lasts"),
    "negative": ("The staff was rude", "The room was dirty", "The food arrived cold", "Delivery took weeks",
                 "The screen is dim", "The price was too high", "The seats were cramped", "The battery died"),
}
_VERDICT = {
    "positive": ("I would gladly come back", "I loved it", "I recommend it to everyone", "it was worth the money",
                 "I am very happy with it", "I will buy it again"),
    "negative": ("I will never come back", "I regret it", "I would not recommend it", "it was a waste of money",
                 "I am very disappointed", "I want a refund"),
}
_CONNECT = ("Still, ", "Overall, ", "In the end, ", "All in all, ", "Even so, ", "")


def _sentiment(rng: random.Random, label: str) -> str:
    other = "negative" if label == "positive" else "positive"
    aspects = [rng.choice(_ASPECT[other if rng.random() < 0.7 else label]) for _ in range(rng.choice((1, 2)))]
    if len(aspects) == 2 and aspects[0] == aspects[1]:
        aspects.pop()
    verdict = rng.choice(_CONNECT) + rng.choice(_VERDICT[label])
    verdict = verdict[0].upper() + verdict[1:]
    text = ". ".join(aspects + [verdict]) + "."
    return f"Review: {text}\nIs the review positive or negative?"


# --- topic: news headlines in four classes ---------------------------------------------------------------
_TOPIC = {
    "world": (("The prime minister", "Foreign ministers", "The president", "Peace negotiators", "The UN",
               "Rebel leaders", "The new government", "Border officials"),
              ("signed a treaty with its neighbours", "called for new elections", "opened talks on the border",
               "announced sanctions on the regime", "met at a summit", "closed the embassy")),
    "sports": (("The home team", "The star striker", "The tennis champion", "The coach", "The national squad",
                "The young sprinter", "The goalkeeper", "The cycling team"),
               ("won the final in extra time", "scored twice in the derby", "lost the title match",
                "broke the world record", "was sent off in the second half", "qualified for the cup")),
    "business": (("Shares of the carmaker", "The central bank", "The retail giant", "Oil prices", "The tech firm",
                  "Investors", "The airline", "The steel maker"),
                 ("rose after strong profits", "cut interest rates", "announced a merger with a rival",
                  "fell on weak sales", "reported record revenue", "plan to cut jobs")),
    "science": (("Astronomers", "Biologists", "A new telescope", "Researchers", "Physicists",
                 "The space agency", "Chemists", "A robot lab"),
                ("discovered a new species of frog", "detected water on a distant planet",
                 "measured a new particle", "built a faster quantum chip", "launched a probe to Mars",
                 "found a gene linked to ageing")),
}
_WHEN = ("", " on Monday", " this week", " yesterday", " after months of work", " in {city}")


def _topic(rng: random.Random, label: str) -> str:
    subjects, predicates = _TOPIC[label]
    when = rng.choice(_WHEN).format(city=rng.choice(CITIES))
    return (f"Headline: {rng.choice(subjects)} {rng.choice(predicates)}{when}.\n"
            "Topic: world, sports, business or science?")


# --- nli: premise about a person, an activity and a place ------------------------------------------------
_ACTS = (("cooking dinner", "kitchen"), ("reading a novel", "library"), ("swimming laps", "pool"),
         ("playing chess", "park"), ("painting a portrait", "studio"), ("buying bread", "bakery"),
         ("fixing a bicycle", "garage"), ("watching a film", "cinema"))
_TIMES = ("", " this morning", " on Sunday", " tonight", " right now")
_NEUTRAL = ("{n} is {a} with a friend.", "{n} is happy.", "{n} is in the {p} every day.", "{n} is tired.",
            "{n} is {a} for a party.", "{n} is in the {p} with a sister.")


def _nli(rng: random.Random, label: str) -> str:
    name = rng.choice(NAMES)
    (act, place), (other_act, other_place) = rng.sample(_ACTS, 2)
    premise = f"{name} is {act} in the {place}{rng.choice(_TIMES)}."
    if label == "entailment":
        hyp = rng.choice(("{n} is in the {p}.", "Someone is {a}.", "{n} is {a}.", "A person is in the {p}."))
    elif label == "contradiction":
        hyp = rng.choice(("{n} is not in the {p}.", "Nobody is {a}.", "{n} is in the {op}.",
                          "{n} is asleep at home.", "{n} is {oa} in the {op}."))
    else:
        hyp = rng.choice(_NEUTRAL)
    hyp = hyp.format(n=name, a=act, p=place, oa=other_act, op=other_place)
    return f"Premise: {premise}\nHypothesis: {hyp}\nEntailment, neutral or contradiction?"


# --- table: does any row hold this value? -----------------------------------------------------------------
TABLE_ROWS = 3
_AGES = range(18, 70)


def _table(rng: random.Random, label: str) -> str:
    """A membership check on one column of a 3-row table. The "no" values are of the right kind and close
    to the table's (another city, an age within 5 years of a listed one, another name). A pilot showed that
    checking a (name, value) pair, which binds two cells of one row, stays at chance for a 135M model with
    a LoRA at this training budget, in either question position; membership is learnt."""
    names = rng.sample(NAMES, TABLE_ROWS)
    cities = rng.sample(CITIES, TABLE_ROWS)
    ages = rng.sample(_AGES, TABLE_ROWS)
    rows = "\n".join(f"{n} | {c} | {a}" for n, c, a in zip(names, cities, ages))
    column = rng.randrange(3)
    yes = label == "yes"
    if column == 0:
        city = rng.choice(cities) if yes else rng.choice([c for c in CITIES if c not in cities])
        question = f"Does anyone live in {city}?"
    elif column == 1:
        near = sorted({a + d for a in ages for d in (-5, -4, -3, -2, -1, 1, 2, 3, 4, 5)} - set(ages))
        age = rng.choice(ages) if yes else rng.choice([a for a in near if a in _AGES])
        question = f"Is anyone {age} years old?"
    else:
        name = rng.choice(names) if yes else rng.choice([n for n in NAMES if n not in names])
        question = f"Is anyone called {name}?"
    return f"Table (name | city | age):\n{rows}\n{question} Answer yes or no."


# --- giver: a name span from one sentence ----------------------------------------------------------------
_OBJECTS = ("book", "letter", "cake", "ticket", "lamp", "guitar", "scarf", "map", "camera", "ring")
_GIVE = ("{g} gave {r} a {o}.", "{g} gave a {o} to {r}.", "{r} got a {o} from {g}.",
         "{r} received a {o} from {g}.", "A {o} was given to {r} by {g}.", "{g} sent {r} a {o}.",
         "{g} handed a {o} to {r}.", "{r} was given a {o} by {g}.")


def _giver_item(rng: random.Random, label: str) -> str:
    other = rng.choice([n for n in NAMES if n != label])
    obj = rng.choice(_OBJECTS)
    ask_giver = rng.random() < 0.5
    giver, receiver = (label, other) if ask_giver else (other, label)
    sentence = rng.choice(_GIVE).format(g=giver, r=receiver, o=obj)
    question = f"Who gave the {obj}?" if ask_giver else f"Who received the {obj}?"
    return f"{sentence}\n{question} Answer with a name."


# --- digit: which digit occurs twice ---------------------------------------------------------------------
def _digit(rng: random.Random, label: str) -> str:
    d = int(label)
    others = rng.sample([x for x in range(1, 10) if x != d], 4)
    seq = others + [d, d]
    rng.shuffle(seq)
    while any(a == b for a, b in zip(seq, seq[1:])):
        rng.shuffle(seq)  # adjacent copies would make the task a bigram lookup
    return f"Digits: {' '.join(map(str, seq))}\nWhich digit appears twice?"


TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("sentiment", ("positive", "negative"), _sentiment),
    TaskSpec("topic", ("world", "sports", "business", "science"), _topic),
    TaskSpec("nli", ("entailment", "neutral", "contradiction"), _nli),
    TaskSpec("table", ("yes", "no"), _table),
    TaskSpec("giver", NAMES, _giver_item),
    TaskSpec("digit", tuple(str(d) for d in range(1, 10)), _digit),
)
TASK_BY_SHORT = {t.short: t for t in TASKS}


def generate_task(spec: TaskSpec, seed: int = SEED) -> dict[str, list[dict[str, str]]]:
    """All splits of one task. Labels cycle per accepted item, so each split is balanced; duplicates of an
    input already drawn (in any split) are redrawn with the same label."""
    rng = random.Random(f"{seed}:{spec.short}")
    seen: set[str] = set()
    items: list[tuple[str, str]] = []
    total = sum(n for _, n in SPLITS)
    while len(items) < total:
        label = spec.labels[len(items) % len(spec.labels)]
        for _ in range(10_000):
            text = spec.make(rng, label)
            if text not in seen:
                break
        else:
            raise RuntimeError(f"task {spec.short}: cannot draw a new input for label {label!r}; "
                               "the templates are too few for the split sizes")
        seen.add(text)
        items.append((text, label))
    out: dict[str, list[dict[str, str]]] = {}
    start = 0
    for split, n in SPLITS:
        chunk = items[start:start + n]
        start += n
        rng.shuffle(chunk)
        out[split] = [{"id": f"tiny_{spec.short}-{split}-{i:04d}", "input": text, "output": label}
                      for i, (text, label) in enumerate(chunk)]
    return out


def relpath(short: str, split: str) -> str:
    return f"{DATASET_PREFIX}{short}/default/{split}.jsonl"


def render(rows: list[dict[str, str]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def build_files(seed: int = SEED) -> dict[str, bytes]:
    """Every data file's relative path and bytes, plus SHA256SUMS."""
    files: dict[str, bytes] = {}
    for spec in TASKS:
        for split, rows in generate_task(spec, seed).items():
            files[relpath(spec.short, split)] = render(rows)
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {path}\n" for path, data in sorted(files.items()))
    files["SHA256SUMS"] = sums.encode()
    return files


def write_files(files: dict[str, bytes], out: Path) -> None:
    """Write into a temporary directory beside ``out``, then swap it in."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for rel, data in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        tmp.chmod(0o755)
        old = out.with_name(f".{out.name}.old")
        if out.exists():
            if old.exists():
                shutil.rmtree(old)
            out.rename(old)
        tmp.rename(out)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_files(files: dict[str, bytes], out: Path) -> list[str]:
    """Paths whose committed bytes differ from ``files`` (missing ones included)."""
    bad = []
    for rel, data in sorted(files.items()):
        path = Path(out) / rel
        if not path.is_file() or path.read_bytes() != data:
            bad.append(rel)
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="data directory (default: tasks/tiny/data)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--check", action="store_true", help="compare with the files in --out instead of writing")
    args = ap.parse_args(argv)
    files = build_files(args.seed)
    if args.check:
        bad = check_files(files, args.out)
        for rel in bad:
            print(f"differs: {args.out / rel}", file=sys.stderr)
        return 1 if bad else 0
    write_files(files, args.out)
    print(f"wrote {len(files) - 1} files and SHA256SUMS to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
