"""The default protocol's decisions where it used to differ from the STAR reference undocumented (the
leaderboard's protocol notes): dream's answer forms, stsb's gold rounding, multiple references."""
from pathlib import Path

import pytest

from merge_bench.evaluation.quiet import quiet
from merge_bench.evaluation.scoring import contains_gold, match_option, process_number, spearman, spearman_aggregation
from merge_bench.evaluation.tasks import task_manager

FIXTURES = Path(__file__).parent / "fixtures"
OPTIONS = ["(A)", "(B)", "(C)"]


@pytest.mark.parametrize("answer,option", [
    ("A", "(A)"), ("A)", "(A)"), ("a.", "(A)"), ("(A)", "(A)"), ("(a) Keep going.", "(A)"), ("b) Drop it", "(B)"),
    ("C: take a break", "(C)"), ("c\nbecause", "(C)"), ("  B", "(B)"), ("B, since", "(B)"),
    # not a leading option letter: the first bracketed option anywhere, as before
    ("The answer is (B).", "(B)"), ("answer: (C)", "(C)"), ("A man said (C)", "(C)"),
    ("a cat", None), ("Answer", None), ("D)", None),
])
def test_dream_accepts_the_reference_forms_at_the_start(answer, option):
    assert match_option(answer, OPTIONS) == option


@pytest.fixture(scope="module")
def loaded():
    import os

    old = os.environ.get("MERGE_BENCH_DATA_DIR")
    os.environ["MERGE_BENCH_DATA_DIR"] = str(FIXTURES)
    try:
        with quiet():
            return task_manager().load(["mistral_dream", "flan_stsb", "llama_stsb", "mistral_ncbi"])["tasks"]
    finally:
        if old is None:
            del os.environ["MERGE_BENCH_DATA_DIR"]
        else:
            os.environ["MERGE_BENCH_DATA_DIR"] = old


def test_dream_task_scores_a_bare_letter(loaded):
    task = loaded["mistral_dream"]
    for doc in task.eval_docs:
        letter = doc["mb_target"].strip("()")
        assert task.process_results(doc, [letter]) == {"acc": 1.0}
        assert task.process_results(doc, [f"{letter.lower()}."]) == {"acc": 1.0}
        wrong = "B" if letter != "B" else "C"
        assert task.process_results(doc, [f"{wrong})"]) == {"acc": 0.0}


def test_stsb_gold_is_rounded_to_one_decimal(loaded):
    for name in ("flan_stsb", "llama_stsb"):
        task = loaded[name]
        raw = {float(d["mb_target"]) for d in task.eval_docs}
        assert 2.4000000953674316 in raw  # the fixture holds the hub's float32 value
        golds = [task.process_results(d, ["3"])["spearman"][1] for d in task.eval_docs]
        assert golds == [round(float(d["mb_target"]), 1) for d in task.eval_docs]
        assert 2.4 in golds and 2.4000000953674316 not in golds


def test_rounding_merges_ranks_as_the_reference_does():
    # golds 3.75 and 3.8 become one rank (Python's round(3.75, 1) = 3.8), which moves Spearman
    docs = [{"mb_target": g} for g in ("3.75", "3.8", "1.0", "4.6")]
    pairs = [process_number(d, [p])["spearman"] for d, p in zip(docs, ("3", "4", "1", "5"))]
    assert [g for _, g in pairs] == [3.8, 3.8, 1.0, 4.6]
    assert spearman_aggregation(pairs) == pytest.approx(spearman([3, 4, 1, 5], [3.8, 3.8, 1.0, 4.6]))
    assert spearman_aggregation(pairs) != pytest.approx(spearman([3, 4, 1, 5], [3.75, 3.8, 1.0, 4.6]))


def test_any_reference_counts_by_default_only_the_first_under_the_reference():
    from merge_bench.evaluation.reference import process_reference

    references = ["breast cancer", "breast carcinoma"]
    assert contains_gold("a breast carcinoma was found", references)
    doc = {"mb_ref_task": "mistral_ncbi", "mb_ref_gold": 0.0, "mb_ref_text": references[0]}
    assert process_reference(doc, ["a breast carcinoma was found"]) == {"acc": 0.0}
    assert process_reference(doc, ["Breast cancer"]) == {"acc": 1.0}


def test_each_decision_has_a_protocol_note():
    from merge_bench.leaderboard.readme import PROTOCOL_NOTES

    notes = "\n".join(PROTOCOL_NOTES)
    for topic in ("first 511 tokens and `</s>`", "Mistral dream", "stsb: the gold score is rounded", "BOS:",
                  "Multiple references", "Items:", "dtype:", "--protocol reference"):
        assert topic in notes, topic
    readme = (Path(__file__).parents[1] / "leaderboard" / "README.md").read_text(encoding="utf-8")
    assert all(f"- {note}" in readme for note in PROTOCOL_NOTES)


def test_every_lots_of_loras_fixture_gold_scores_as_an_answer():
    """The fixtures hold the real gold spellings (Profession, Not Answerable, in favor, several qasc references):
    every row is an item under both protocols, and answering with the gold text itself scores full marks."""
    import os

    from merge_bench.evaluation.data import load_split
    from merge_bench.evaluation.tasks import list_tasks

    old = os.environ.get("MERGE_BENCH_DATA_DIR")
    os.environ["MERGE_BENCH_DATA_DIR"] = str(FIXTURES)
    try:
        manager = task_manager()
        names = [t.name for t in list_tasks("mistral", manager)]
        with quiet():
            loaded = manager.load(names + [f"{n}_ref" for n in names])["tasks"]
        for info in list_tasks("mistral", manager):
            rows = load_split(info.dataset, info.config, info.split)
            assert all(isinstance(r["output"], list) and r["output"] for r in rows), info.name
            assert rows[0]["input"].startswith("Definition: ") and "\n\nPositive Example 1 -\nInput: " in rows[0]["input"]
            for variant in (info.name, f"{info.name}_ref"):
                task = loaded[variant]
                docs = list(task.eval_docs)
                assert len(docs) == len(rows), variant  # no row dropped: every gold maps to a label
                if variant.endswith("_ref"):
                    continue  # the reference's own matching misses some (test_reference_answer_matching)
                for doc in docs:
                    score = task.process_results(doc, [doc["output"][0]])
                    assert list(score.values()) == [1.0], (variant, doc["output"], score)
    finally:
        if old is None:
            del os.environ["MERGE_BENCH_DATA_DIR"]
        else:
            os.environ["MERGE_BENCH_DATA_DIR"] = old
