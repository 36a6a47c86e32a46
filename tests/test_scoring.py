import math

import pytest

from merge_bench.evaluation.scoring import (
    average_ranks,
    best_token_f1,
    contains_gold,
    first_number,
    label_groups,
    match_label,
    process_contains,
    process_label,
    process_number,
    process_number_clamped,
    process_token_f1,
    spearman,
    spearman_aggregation,
    token_f1,
)

ETHOS = [["not violence", "not_violence", "non violence", "non_violence"], "violence"]
YES_NO = ["yes", "no"]
DISCO = ["SINGLE_S_COORD", "SINGLE_CATAPHORA", "SINGLE_CONN_INNER", "SINGLE_APPOSITION", "SINGLE_VP_COORD",
         "SINGLE_CONN_START", "PAIR_ANAPHORA", "PAIR_CONN", "SINGLE_RELATIVE", "SINGLE_CONN_INNER_ANAPHORA",
         "SINGLE_S_COORD_ANAPHORA", "PAIR_CONN_ANAPHORA", "PAIR_NONE"]


@pytest.mark.parametrize("text, labels, expected", [
    ("This text is not violence.", ETHOS, "not violence"),
    ("Violence", ETHOS, "violence"),
    ("violence, or maybe not violence", ETHOS, "violence"),  # the first occurrence wins
    ("NOT   VIOLENCE", ETHOS, "not violence"),  # case and whitespace runs
    ("not_violence", ETHOS, "not violence"),  # a reference alias
    ("I know the answer", YES_NO, None),  # "no" inside "know"
    ("The eyes have it", YES_NO, None),  # "yes" inside "eyes"
    ("No, I don't know.", YES_NO, "no"),
    ("Answer: YES!", YES_NO, "yes"),
    ("", YES_NO, None),
    ("single_s_coord_anaphora", DISCO, "SINGLE_S_COORD_ANAPHORA"),
    ("SINGLE_S_COORD.", DISCO, "SINGLE_S_COORD"),
    ("PAIR_CONN_ANAPHORA", DISCO, "PAIR_CONN_ANAPHORA"),
    ("pair_conn anaphora", DISCO, "PAIR_CONN"),
    ("SINGLE_CONN_INNER_ANAPHORAS", DISCO, None),
    ("The answer is (B) By taxi.", ["(A)", "(B)", "(C)"], "(B)"),
    ("answer:(c)", ["(A)", "(B)", "(C)"], "(C)"),
    ("A. Keep going", ["(A)", "(B)", "(C)"], None),
    ("sci/tech news", ["World", "Sports", "Business", "Sci/Tech"], "Sci/Tech"),
    ("Sci/Technology", ["World", "Sports", "Business", "Sci/Tech"], None),
    ("SciTech", ["World", "Sports", "Business", "Sci/Tech"], None),
    ("in  favor of it", [["in favor", "in_favor"], "against"], "in favor"),
    ("Entailment", [["Entail", "entailment"], "Neither", ["Contradict", "contradiction"]], "Entail"),
    ("It entails it", [["Entail", "entailment"], "Neither", ["Contradict", "contradiction"]], None),
    ("10", ["0", "1", "2", "3"], None),
    ("The answer is 2.", ["0", "1", "2", "3"], "2"),
    ("option 2 is better than Option 1", [["Option 1", "1"], ["Option 2", "2"]], "Option 2"),
    ("2", [["Option 1", "1"], ["Option 2", "2"]], "Option 2"),
])
def test_match_label(text, labels, expected):
    assert match_label(text, labels) == expected


def test_longest_label_first_at_the_same_position():
    # "Barack Obama" and "Obama" are both labels; at position 0 only the long one starts, and where
    # both could start the longer form must win.
    assert match_label("Barack Obama said", ["Obama", "Barack Obama"]) == "Barack Obama"
    assert match_label("the new york times", ["new york", "new york times"]) == "new york times"
    assert match_label("the new york subway", ["new york", "new york times"]) == "new york"


def test_gold_strings_normalize_like_predictions():
    assert match_label("Not Violence", ETHOS) == match_label("not violence ", ETHOS) == "not violence"
    assert match_label("(A) Keep going.", ["(A)", "(B)", "(C)"]) == "(A)"


def test_bad_label_sets_are_rejected():
    with pytest.raises(ValueError, match="given to both"):
        label_groups(["yes", ["no", "YES"]])
    with pytest.raises(ValueError, match="non-empty"):
        label_groups([])
    with pytest.raises(ValueError, match="non-empty"):
        label_groups(["yes", ""])
    with pytest.raises(ValueError):
        label_groups("yes")


@pytest.mark.parametrize("text, clamp, expected", [
    ("4.5 out of 5", None, 4.5),
    ("3.8/5", None, 3.8),
    ("Score: -1", None, -1.0),
    ("Score: -1", (0.0, 5.0), 0.0),
    ("7", (0.0, 5.0), 5.0),
    ("about .5", None, 0.5),
    ("no idea", None, 0.0),
    ("2 sentences, similarity 4", None, 2.0),
])
def test_first_number(text, clamp, expected):
    assert first_number(text, clamp) == expected


def test_average_ranks_share_ties():
    assert average_ranks([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]


def test_spearman_against_hand_computed_value():
    # ranks x: 1..5; ranks y: [1, 2, 3.5, 5, 3.5]; sum dxdy = 8, sum dx² = 10, sum dy² = 9.5
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95), abs=1e-12)
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert spearman([0.1, 5, 2], [1, 100, 3]) == pytest.approx(1.0)  # monotone, not linear


def test_spearman_undefined_cases_are_zero():
    assert spearman([1, 1, 1], [1, 2, 3]) == 0.0
    assert spearman([2.0], [3.0]) == 0.0
    with pytest.raises(ValueError):
        spearman([1, 2], [1])


def test_spearman_aggregation_over_pairs():
    pairs = [(1, 5), (2, 6), (3, 7), (4, 8), (5, 7)]  # (pred, gold)
    assert spearman_aggregation(pairs) == pytest.approx(8 / math.sqrt(95), abs=1e-12)


def test_token_f1_counts_words_not_characters():
    # pred tokens: the, host, and, live (4); gold: host, live, off (3); 2 in common
    assert token_f1("The host and live", "host live off") == pytest.approx(4 / 7)
    assert token_f1("pollution.", "pollution") == 1.0
    assert token_f1("hots", "host") == 0.0  # same characters, different word
    assert token_f1("", "") == 1.0
    assert token_f1("", "host") == 0.0
    assert best_token_f1("energy", ["Plants", "energy"]) == 1.0
    assert best_token_f1("plants use energy", ["Plants", "energy"]) == pytest.approx(0.5)  # P=1/3, R=1


def test_contains_gold_is_word_bounded_and_case_insensitive():
    assert contains_gold("The disease is BREAST   cancer.", ["breast cancer"])
    assert not contains_gold("She lives in Maryland", ["Mary"])
    assert contains_gold("It was Lucy.", ["Lucy Smith", "Lucy"])
    assert not contains_gold("anything", [""])


def test_lm_eval_hooks():
    doc = {"mb_labels": [["no"], ["yes"]], "mb_golds": ["no"], "mb_target": "no"}
    assert process_label(doc, ["No, it does not."]) == {"acc": 1.0}
    assert process_label(doc, ["I know"]) == {"acc": 0.0}
    record = {"mb_labels": [["Barack Obama"], ["Obama"], ["Berlin"]], "mb_golds": ["Barack Obama", "Obama"]}
    assert process_label(record, ["Obama, of course"]) == {"acc": 1.0}
    assert process_label(record, ["Berlin"]) == {"acc": 0.0}
    assert process_contains({"mb_golds": ["skin tumour"]}, ["skin tumour"]) == {"acc": 1.0}
    assert process_token_f1({"mb_golds": ["host", "live"]}, ["live"]) == {"f1": 1.0}
    assert process_number({"mb_target": "3.5"}, ["7"]) == {"spearman": (7.0, 3.5)}
    assert process_number_clamped({"mb_target": "3.5"}, ["7"]) == {"spearman": (5.0, 3.5)}
    with pytest.raises(ValueError):
        process_label(doc, ["a", "b"])
