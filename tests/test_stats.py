"""Protocol v2 statistics (merge_bench.bench.stats) and task draws (merge_bench.bench.draws)."""
import json
import math
from math import comb

import numpy as np
import pytest

from merge_bench.bench.draws import permutations, task_sets
from merge_bench.bench.scores import normalized
from merge_bench.bench.stats import (Draw, TaskItems, average_ranks, bootstrap, holm, identity_plan, make_plan,
                                     replicate_scores, wilson)
from merge_bench.evaluation.scoring import spearman

GOLD = [1, 2, 3, 4, 5]


def pairs(pred):
    return np.column_stack([pred, GOLD])


# Hand-made: task a (0/1), b (F1 floats), s (Spearman). Draw 1 = {a, b}, draw 2 = {a, s} (a is shared).
TASK_A = TaskItems("mean", [1, 0, 0, 0], [1, 1, 1, 0], {"m1": [1, 1, 0, 0], "simple_avg": [1, 1, 1, 0]})
TASK_B = TaskItems("mean", [0.25, 0.25], [1.0, 0.5], {"m1": [0.5, 1.0], "simple_avg": [0.25, 0.5]})
TASK_S = TaskItems("spearman", pairs([3, 3, 3, 3, 3]), pairs([1, 2, 3, 5, 4]),
                   {"m1": pairs([1, 2, 3, 4, 5]), "simple_avg": pairs([5, 4, 3, 2, 1])})
DRAWS = [Draw({"a": TASK_A, "b": TASK_B}), Draw({"a": TASK_A, "s": TASK_S})]


def test_point_estimate_matches_hand_computed_values():
    # m1: draw 1 = (100·50/75 + 100·75/75)/2 = 250/3; draw 2 = (100·50/75 + 100·100/90)/2 = 800/9
    # simple_avg: draw 1 = (100 + 100·37.5/75)/2 = 75; draw 2 = (100 − 100·100/90)/2 = −50/9
    r = bootstrap(DRAWS, B=0)
    m1, sa, pre = r.methods["m1"], r.methods["simple_avg"], r.pretrained
    assert m1.per_draw == pytest.approx([250 / 3, 800 / 9])
    assert m1.normalized == pytest.approx(1550 / 18)
    assert sa.per_draw == pytest.approx([75, -50 / 9])
    assert sa.normalized == pytest.approx(625 / 18)
    assert pre.normalized == pytest.approx(25.0)               # (100/3 + 100/3)/2 and (100/3 + 0)/2
    assert m1.draw_sd == pytest.approx(abs(250 / 3 - 800 / 9) / math.sqrt(2))
    assert m1.delta == pytest.approx(1550 / 18 - 625 / 18)
    assert (m1.rank, sa.rank, r.leader) == (1, 2, "m1")
    assert r.tasks["s@1"].scores == pytest.approx({"lora": 90.0, "pretrained": 0.0, "m1": 100.0, "simple_avg": -100.0})
    # the same numbers through the protocol's own normalized() on draw 1
    assert m1.per_draw[0] == pytest.approx(normalized({"a": 50.0, "b": 75.0}, {"a": 75.0, "b": 75.0}))


def plain_loop(draws, plan, row):
    """An independent bootstrap: python loops over the same index draws, scoring.spearman for stsb-like tasks."""
    out = []
    for b in range(len(plan.outer)):
        per = []
        for j in plan.outer[b]:
            ratios = []
            for name, t in draws[j].tasks.items():
                idx = plan.inner[name][b]
                def score(a):
                    a = np.asarray(a, dtype=float)[idx]
                    return 100 * (spearman(list(a[:, 0]), list(a[:, 1])) if t.kind == "spearman" else a.mean())
                lora = score(t.lora)
                ratios.append(math.nan if lora <= 0 else 100 * score(t.methods[row] if row != "pretrained"
                                                                      else t.pretrained) / lora)
            per.append(sum(ratios) / len(ratios))
        out.append(sum(per) / len(per))
    return np.array(out)


def test_vectorised_replicates_equal_a_plain_loop_on_the_same_indices():
    plan = make_plan(DRAWS, B=300, seed=7)
    assert plan.outer.shape == (300, 2) and set(np.unique(plan.outer)) == {0, 1}
    names, reps = replicate_scores(DRAWS, plan)
    assert names == ["pretrained", "m1", "simple_avg"]
    for c, name in enumerate(names):
        np.testing.assert_allclose(reps[:, c], plain_loop(DRAWS, plan, name), rtol=1e-12, atol=1e-9)
    assert np.isnan(reps[:, 0]).any()          # n = 5 Spearman: some resampled LoRA ρ are ≤ 0
    r = bootstrap(DRAWS, plan=plan)
    assert r.dropped_replicates == int(np.isnan(reps[:, 0]).sum()) and r.B == 300
    kept = reps[~np.isnan(reps[:, 0])]
    assert r.methods["m1"].normalized_ci95 == pytest.approx(tuple(np.percentile(kept[:, 1], [2.5, 97.5])))
    d = kept[:, 1] - kept[:, 2]
    assert r.methods["m1"].p_delta_gt0 == pytest.approx(np.mean(d > 0))


def test_identity_plan_and_b0_return_the_point_estimate():
    point = bootstrap(DRAWS, B=0)
    _, reps = replicate_scores(DRAWS, identity_plan(DRAWS, B=4))
    np.testing.assert_allclose(reps, np.tile([point.pretrained.normalized, point.methods["m1"].normalized,
                                              point.methods["simple_avg"].normalized], (4, 1)), rtol=1e-14)
    for s in [*point.methods.values(), point.pretrained]:
        assert s.normalized_ci95 == (s.normalized, s.normalized)
    m1 = point.methods["m1"]
    assert m1.delta_ci95 == (m1.delta, m1.delta) and m1.p_delta_gt0 == 1.0 and m1.rank_ci95 == (1, 1)
    assert point.B == 0 and point.seed is None and all(p.p == 1.0 and not p.significant for p in point.pairs)


def test_ci_of_a_method_identical_to_lora_is_a_single_point():
    rng = np.random.default_rng(0)
    lora = rng.integers(0, 2, 50)
    pre = lora * (rng.random(50) < 0.5)                              # worse than lora on every task
    tasks = {"x": TaskItems("mean", pre, lora, {"copy": lora, "ones": lora, "simple_avg": pre}),
             "y": TaskItems("mean", pre, np.ones(50), {"copy": np.ones(50), "ones": np.ones(50), "simple_avg": pre})}
    r = bootstrap([Draw(tasks)], B=500, seed=3)
    assert r.methods["copy"].normalized_ci95 == (100.0, 100.0)
    assert r.methods["copy"].delta_ci95[0] > 0 and r.methods["copy"].draw_sd is None
    pair = next(p for p in r.pairs if (p.a, p.b) == ("copy", "ones"))
    assert pair.delta == 0.0 and pair.p == 1.0 and not pair.significant
    assert r.methods["copy"].rank_ci95 == (1, 1)                  # tied → both min rank 1
    assert r.tasks["y"].wilson95["lora"] == pytest.approx(wilson(50, 50))


def correlated_task(seed=0, n=200):
    rng = np.random.default_rng(seed)
    lora = (rng.random(n) < 0.85).astype(float)
    a = (rng.random(n) < 0.6).astype(float)
    b = a.copy()
    b[np.flatnonzero(a == 0)[:8]] = 1.0                      # b = a plus 8 items: strongly correlated
    return TaskItems("mean", (rng.random(n) < 0.4).astype(float), lora, {"a": a, "b": b})


def test_paired_difference_ci_is_narrower_than_unpaired():
    draws = [Draw({"t": correlated_task()})]
    _, r1 = replicate_scores(draws, make_plan(draws, B=2000, seed=1))
    _, r2 = replicate_scores(draws, make_plan(draws, B=2000, seed=2))
    paired = np.percentile(r1[:, 2] - r1[:, 1], [2.5, 97.5])
    unpaired = np.percentile(r2[:, 2] - r1[:, 1], [2.5, 97.5])      # each row its own resample
    assert paired[0] > 0 > unpaired[0]                                  # only pairing sees b > a
    assert paired[1] - paired[0] < 0.5 * (unpaired[1] - unpaired[0])


def test_ties_ranks_and_holm_claims():
    rng = np.random.default_rng(5)
    n = 200
    lora = np.ones(n)
    good = (rng.random(n) < 0.95).astype(float)
    mid = (rng.random(n) < 0.6).astype(float)
    mid2 = mid.copy()
    mid2[np.flatnonzero(mid == 0)[0]] = 1.0
    task = TaskItems("mean", np.zeros(n), lora, {"simple_avg": mid, "twin": mid2, "good": good})
    r = bootstrap([Draw({"t1": task, "t2": task})], B=1000, seed=0)
    assert r.leader == "good" and r.tie_group == ["good"]
    assert r.methods["good"].rank_ci95 == (1, 1) and r.methods["good"].p_delta_gt0 == 1.0
    assert r.methods["twin"].rank == 2 and r.methods["simple_avg"].rank == 3
    claims = {(p.a, p.b): p for p in r.pairs}
    assert claims[("simple_avg", "good")].significant and claims[("twin", "good")].significant
    assert not claims[("simple_avg", "twin")].significant
    assert claims[("simple_avg", "good")].p == pytest.approx(1 / 1001)          # floored
    assert claims[("simple_avg", "good")].p_holm == pytest.approx(3 / 1001)


def test_holm_on_hand_made_p_values():
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → running max 0.02 0.03 0.06 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_wilson_against_hand_computed_values():
    lo, hi = wilson(50, 100)
    assert (lo, hi) == pytest.approx((40.383, 59.617), abs=1e-3)
    assert wilson(0, 10) == pytest.approx((0.0, 100 * 0.38416 / 1.38416), abs=1e-3)   # z²/n / (1 + z²/n)
    with pytest.raises(ValueError):
        wilson(3, 0)


def test_spearman_task_matches_references_on_observed_data():
    rng = np.random.default_rng(11)
    gold = rng.integers(0, 6, 40).astype(float)                     # many ties
    preds = {k: np.round(gold + rng.normal(0, s, 40)) for k, s in (("lora", 0.5), ("pre", 2.0), ("m", 1.0))}
    mk = lambda p: np.column_stack([p, gold])
    task = TaskItems("spearman", mk(preds["pre"]), mk(preds["lora"]), {"m": mk(preds["m"])})
    scores = bootstrap([Draw({"stsb": task})], B=0).tasks["stsb"].scores
    for row, key in (("lora", "lora"), ("pretrained", "pre"), ("m", "m")):
        assert scores[row] == pytest.approx(100 * spearman(list(preds[key]), list(gold)), abs=1e-10)
    stats = pytest.importorskip("scipy.stats")
    assert scores["m"] == pytest.approx(100 * stats.spearmanr(preds["m"], gold).statistic, abs=1e-10)
    a = rng.integers(0, 4, (6, 15))
    np.testing.assert_array_equal(average_ranks(a), stats.rankdata(a, axis=1))


def test_undefined_ratios():
    lora0 = TaskItems("mean", [1, 0], [0, 0], {"m": [1, 1]})
    with pytest.raises(ValueError, match="zero_task"):
        bootstrap([Draw({"zero_task": lora0, "ok": TaskItems("mean", [1], [1], {"m": [1]})})])
    one_hit = TaskItems("mean", [0] * 5, [1, 0, 0, 0, 0], {"m": [1, 1, 0, 0, 0]})
    draws = [Draw({"t": one_hit})]
    plan = make_plan(draws, B=400, seed=0)
    r = bootstrap(draws, plan=plan)
    assert r.dropped_replicates == int((~(plan.inner["t"] == 0).any(axis=1)).sum()) > 0
    assert r.B == 400 and r.methods["m"].normalized == 200.0


def test_inconsistent_inputs_are_rejected():
    other_a = TaskItems("mean", [1, 0, 0, 0], [1, 1, 1, 1], {"m1": [1, 1, 0, 0], "simple_avg": [1, 1, 1, 0]})
    with pytest.raises(ValueError, match="different items"):
        bootstrap([Draw({"a": TASK_A}), Draw({"a": other_a})])
    bad_gold = TaskItems("spearman", pairs([1, 2, 3, 4, 5]), np.column_stack([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]]),
                         {"m": pairs([1, 2, 3, 4, 5])})
    with pytest.raises(ValueError, match="gold"):
        bootstrap([Draw({"s": bad_gold})])
    with pytest.raises(ValueError, match="reference"):
        bootstrap(DRAWS, B=0, reference="nope")


def test_same_seed_same_output_and_json_shape():
    a, b, c = (bootstrap(DRAWS, B=500, seed=s).to_dict() for s in (4, 4, 5))
    assert json.dumps(a) == json.dumps(b)
    assert a["methods"]["m1"]["normalized_ci95"] != c["methods"]["m1"]["normalized_ci95"]
    assert set(a) == {"B", "seed", "n_draws", "reference", "alpha", "leader", "tie_group", "dropped_replicates",
                      "methods", "pretrained", "pairs", "tasks", "retained_excluded", "retained_dropped_replicates"}
    m1 = a["methods"]["m1"]
    assert set(m1) == {"normalized", "normalized_ci95", "per_draw", "draw_sd", "delta", "delta_ci95",
                       "p_delta_gt0", "rank", "rank_ci95", "tied_with_leader", "retained", "retained_ci95",
                       "retained_per_draw"}
    assert len(m1["normalized_ci95"]) == 2 and m1["normalized"] == round(1550 / 18, 4)
    assert a["pairs"][0].keys() == {"a", "b", "delta", "p", "p_holm", "significant"}
    assert a["tasks"]["a@0"]["wilson95"]["lora"] == [round(v, 4) for v in wilson(3, 4)]
    assert a["tasks"]["b@0"]["wilson95"] is None and a["pretrained"]["rank"] is None


POOL = ["t%d" % i for i in range(8)]


def test_permutations_are_seeded_and_explicit():
    p1, p2, p3 = permutations(POOL, 5, seed=0), permutations(POOL, 5, seed=0), permutations(POOL, 5, seed=1)
    assert p1 == p2 and p1 != p3
    assert all(sorted(p) == POOL for p in p1) and len({tuple(p) for p in p1}) == 5
    assert permutations(POOL[::-1], 3, seed=0) == p1[:3]         # order-free pool; draw d independent of D
    rng = np.random.default_rng([0, 0])                              # Fisher–Yates by hand for draw 0
    ref = list(POOL)
    for i in range(7, 0, -1):
        j = int(rng.integers(0, i + 1))
        ref[i], ref[j] = ref[j], ref[i]
    assert p1[0] == ref


def test_task_sets_nested_and_all_subsets():
    sets = task_sets(POOL, [2, 3, 5, 8], draws=4, seed=2)
    for n, m in ((2, 3), (3, 5)):
        assert all(big[:n] == small for small, big in zip(sets[n], sets[m]))
    assert sets[8] == [POOL] and len(sets[2]) == 4
    assert task_sets(POOL, [3], draws=4, seed=2) == {3: sets[3]}
    all6 = task_sets(POOL[:6], [2, 6], draws="all", seed=0)
    assert len(all6[2]) == comb(6, 2) == 15 and all6[2][0] == ["t0", "t1"] and all6[6] == [POOL[:6]]
    assert len({tuple(s) for s in all6[2]}) == 15
    with pytest.raises(ValueError, match="more than 15"):
        task_sets(POOL[:6], [3], draws="all", seed=0)                  # C(6, 3) = 20
    with pytest.raises(ValueError):
        task_sets(POOL, [9], draws=2, seed=0)


def test_a_task_shared_by_two_draws_keeps_its_references_and_its_own_merges():
    # Task a is in both draws with the same pretrained and LoRA rows; each draw merged another set, so its
    # method rows differ. The bootstrap pairs a's items across draws and scores each draw's own rows.
    a2 = TaskItems("mean", TASK_A.pretrained, TASK_A.lora, {"m1": [1, 1, 1, 0], "simple_avg": [0, 0, 1, 0]})
    draws = [Draw({"a": TASK_A, "b": TASK_B}), Draw({"a": a2, "s": TASK_S})]
    plan = make_plan(draws, B=200, seed=3)
    names, reps = replicate_scores(draws, plan)
    for c, name in enumerate(names):
        np.testing.assert_allclose(reps[:, c], plain_loop(draws, plan, name), rtol=1e-12, atol=1e-9)
    r = bootstrap(draws, B=0)
    assert r.methods["m1"].per_draw == pytest.approx([250 / 3, (100 + 100 * 100 / 90) / 2])
    assert r.tasks["a@1"].scores["m1"] == 75.0 and r.tasks["a@0"].scores["m1"] == 50.0
    other_lora = TaskItems("mean", TASK_A.pretrained, [1, 1, 0, 0], a2.methods)
    with pytest.raises(ValueError, match="'a' appears in several draws"):
        bootstrap([Draw({"a": TASK_A}), Draw({"a": other_lora})], B=0)


def test_retained_gain_matches_hand_computed_values_and_names_excluded_tasks():
    # Task c: the LoRA (50) does not beat pretrained (50), so it is left out of the retained gain, not of normalized.
    task_c = TaskItems("mean", [1, 0], [0, 1], {"m1": [1, 1], "simple_avg": [0, 0]})
    draws = [Draw({"a": TASK_A, "b": TASK_B, "c": task_c}), Draw({"a": TASK_A, "s": TASK_S})]
    r = bootstrap(draws, B=0)
    # m1: draw 1 = (100·(50−25)/50 + 100·(75−25)/50)/2 = 75; draw 2 = (50 + 100·100/90)/2 = 725/9
    # simple_avg: draw 1 = (100 + 100·12.5/50)/2 = 62.5; draw 2 = (100 − 100·100/90)/2 = −50/9
    assert r.methods["m1"].retained_per_draw == pytest.approx([75, 725 / 9])
    assert r.methods["m1"].retained == pytest.approx((75 + 725 / 9) / 2)
    assert r.methods["simple_avg"].retained == pytest.approx((62.5 - 50 / 9) / 2)
    assert r.pretrained.retained == 0.0
    assert r.retained_excluded == ["c"]
    assert r.methods["m1"].normalized == pytest.approx(((100 * 50 / 75 + 100 + 100 * 100 / 50) / 3 + 800 / 9) / 2)
    # The CI comes from the same replicates as the normalized one: B = 0 gives the point; resampled, it
    # brackets the point, and a plain loop over the same plan's indices gives the same interval.
    assert r.methods["m1"].retained_ci95 == pytest.approx((r.methods["m1"].retained,) * 2)
    full = bootstrap(draws, B=300, seed=3)
    lo, hi = full.methods["m1"].retained_ci95
    assert lo <= full.methods["m1"].retained <= hi and lo < hi
    plan = make_plan(draws, B=300, seed=3)
    loop = []
    for b in range(300):
        per = []
        for d in plan.outer[b]:
            gains = []
            for t, items in draws[d].tasks.items():
                if t == "c":
                    continue
                idx = plan.inner[t][b]
                sub = TaskItems(items.kind, np.asarray(items.pretrained)[idx], np.asarray(items.lora)[idx],
                                {k: np.asarray(v)[idx] for k, v in items.methods.items()})
                s = {row: _score(items.kind, getattr(sub, row) if row != "m1" else sub.methods["m1"])
                     for row in ("pretrained", "lora", "m1")}
                gains.append(100 * (s["m1"] - s["pretrained"]) / (s["lora"] - s["pretrained"])
                             if s["lora"] > s["pretrained"] else math.nan)
            per.append(np.mean(gains))
        loop.append(np.mean(per))
    loop = np.asarray(loop)
    loop = loop[~np.isnan(loop)]
    assert full.retained_dropped_replicates == 300 - len(loop)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(loop, [2.5, 97.5])))


def test_retained_gain_is_na_when_a_draw_keeps_no_task():
    task_c = TaskItems("mean", [1, 0], [0, 1], {"m1": [1, 1], "simple_avg": [0, 0]})
    r = bootstrap([Draw({"c": task_c})], B=10)
    assert r.methods["m1"].retained is None and r.retained_excluded == ["c"]


def _score(kind, rows):
    rows = np.asarray(rows, dtype=float)
    return 100 * rows.mean() if kind == "mean" else 100 * spearman(rows[:, 0].tolist(), rows[:, 1].tolist())
