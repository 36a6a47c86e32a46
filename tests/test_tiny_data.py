"""The embedded tiny task data: deterministic generation, committed bytes, split hygiene, balance, and
answers that are right by construction (checked against each input independently of the generator)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from merge_bench.evaluation.scoring import match_label

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tasks" / "tiny" / "data"


def _load_script():
    spec = importlib.util.spec_from_file_location("make_tiny_data", ROOT / "scripts" / "make_tiny_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_tiny_data", module)
    spec.loader.exec_module(module)
    return module


gen = _load_script()
SHORTS = [t.short for t in gen.TASKS]


def _rows(short: str, split: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / gen.relpath(short, split)).read_text().splitlines()]


@pytest.fixture(scope="module")
def built() -> dict[str, bytes]:
    return gen.build_files()


def test_regeneration_is_byte_identical_to_the_committed_files(built):
    assert gen.check_files(built, DATA) == []
    committed = {p.relative_to(DATA).as_posix() for p in DATA.rglob("*") if p.is_file()}
    assert committed == set(built)


def test_sha256sums_match_the_files():
    lines = (DATA / "SHA256SUMS").read_text().splitlines()
    assert len(lines) == 3 * len(gen.TASKS)
    for line in lines:
        digest, rel = line.split("  ")
        assert hashlib.sha256((DATA / rel).read_bytes()).hexdigest() == digest, rel


def test_check_mode_detects_an_edit(built, tmp_path):
    gen.write_files(built, tmp_path / "data")
    assert gen.main(["--check", "--out", str(tmp_path / "data")]) == 0
    target = tmp_path / "data" / gen.relpath("digit", "test")
    target.write_bytes(target.read_bytes().replace(b'"output": "5"', b'"output": "6"', 1))
    assert gen.main(["--check", "--out", str(tmp_path / "data")]) == 1


def test_another_seed_gives_other_data():
    assert gen.generate_task(gen.TASKS[0], seed=1) != gen.generate_task(gen.TASKS[0])


@pytest.mark.parametrize("short", SHORTS)
def test_schema_sizes_and_disjoint_splits(short):
    seen_inputs: set[str] = set()
    seen_ids: set[str] = set()
    for split, n in gen.SPLITS:
        rows = _rows(short, split)
        assert len(rows) == n
        for r in rows:
            assert list(r) == ["id", "input", "output"]
            assert r["id"].startswith(f"tiny_{short}-{split}-")
        inputs = {r["input"] for r in rows}
        assert len(inputs) == n, f"{short}/{split} repeats an input"
        assert not inputs & seen_inputs, f"{short}/{split} shares inputs with another split"
        seen_inputs |= inputs
        seen_ids |= {r["id"] for r in rows}
    assert len(seen_ids) == sum(n for _, n in gen.SPLITS)


@pytest.mark.parametrize("short", SHORTS)
def test_labels_are_balanced_and_matchable(short):
    labels = gen.TASK_BY_SHORT[short].labels
    for split, n in gen.SPLITS:
        counts = Counter(r["output"] for r in _rows(short, split))
        assert set(counts) == set(labels)
        assert max(counts.values()) - min(counts.values()) <= 1, (split, counts)
    for r in _rows(short, "test"):
        assert match_label(r["output"], labels) == r["output"]  # the gold survives label matching


@pytest.mark.parametrize("short", SHORTS)
def test_prompts_are_short(short):
    # Evaluation cost grows with prompt length; the longest (table) stays under 200 characters.
    assert max(len(r["input"]) for split, _ in gen.SPLITS for r in _rows(short, split)) < 200


def _all(short: str) -> list[dict]:
    return [r for split, _ in gen.SPLITS for r in _rows(short, split)]


def test_digit_answers_occur_exactly_twice():
    for r in _all("digit"):
        digits = re.search(r"Digits: ([\d ]+)\n", r["input"]).group(1).split()
        counts = Counter(digits)
        assert counts[r["output"]] == 2 and sum(counts.values()) == len(counts) + 1
        assert all(a != b for a, b in zip(digits, digits[1:]))  # copies never adjacent


def test_table_answers_follow_the_table():
    for r in _all("table"):
        lines = r["input"].split("\n")
        assert lines[0] == "Table (name | city | age):"
        rows = [line.split(" | ") for line in lines[1:-1]]
        assert len(rows) == gen.TABLE_ROWS
        names, cities, ages = (set(col) for col in zip(*rows))
        q = lines[-1]
        if m := re.match(r"Does anyone live in (\w+)\? Answer yes or no\.$", q):
            truth = m.group(1) in cities
        elif m := re.match(r"Is anyone (\d+) years old\? Answer yes or no\.$", q):
            truth = m.group(1) in ages
            assert truth or min(abs(int(m.group(1)) - int(a)) for a in ages) <= 5  # near misses
        else:
            m = re.match(r"Is anyone called (\w+)\? Answer yes or no\.$", q)
            truth = m.group(1) in names
        assert r["output"] == ("yes" if truth else "no"), r


def test_giver_answers_name_the_giver_or_receiver():
    patterns = [  # (regex over the sentence, which group is the giver, which the receiver)
        (r"^(\w+) gave (\w+) an? \w+\.$", 1, 2), (r"^(\w+) gave an? \w+ to (\w+)\.$", 1, 2),
        (r"^(\w+) got an? \w+ from (\w+)\.$", 2, 1), (r"^(\w+) received an? \w+ from (\w+)\.$", 2, 1),
        (r"^An? \w+ was given to (\w+) by (\w+)\.$", 2, 1), (r"^(\w+) sent (\w+) an? \w+\.$", 1, 2),
        (r"^(\w+) handed an? \w+ to (\w+)\.$", 1, 2), (r"^(\w+) was given an? \w+ by (\w+)\.$", 2, 1),
    ]
    for r in _all("giver"):
        sentence, question = r["input"].split("\n")
        for pattern, g, rcv in patterns:
            if m := re.match(pattern, sentence):
                break
        else:
            pytest.fail(f"unparsed sentence {sentence!r}")
        expected = m.group(g) if question.startswith("Who gave") else m.group(rcv)
        assert r["output"] == expected, r


def test_sentiment_is_decided_by_the_closing_sentence():
    verdicts = {label: [v.lower() for v in vs] for label, vs in gen._VERDICT.items()}
    for r in _all("sentiment"):
        closing = r["input"].split("\n")[0].removeprefix("Review: ").split(". ")[-1].lower()
        assert any(closing.rstrip(".").endswith(v) for v in verdicts[r["output"]]), r


def test_nli_labels_follow_the_hypothesis_templates():
    for r in _all("nli"):
        premise = re.match(r"Premise: (\w+) is (.+) in the (\w+)", r["input"])
        name, act, place = premise.groups()
        hyp = re.search(r"Hypothesis: (.+)\n", r["input"]).group(1)
        entails = {f"{name} is in the {place}.", f"Someone is {act}.", f"{name} is {act}.",
                   f"A person is in the {place}."}
        contradicts = hyp in {f"{name} is not in the {place}.", f"Nobody is {act}.", f"{name} is asleep at home."} \
            or (hyp.startswith(f"{name} is ") and " in the " in hyp and not hyp.endswith(f"the {place}.")
                and "every day" not in hyp and "with a" not in hyp)
        expected = "entailment" if hyp in entails else "contradiction" if contradicts else "neutral"
        assert r["output"] == expected, r
