"""ties, tall_masks, dare, breadcrumbs and the shared ops: hand-computed examples and properties."""
import math

import pytest
import torch

from merge_bench.merging.delta import LowRank
from merge_bench.merging.methods import get_method
from merge_bench.merging.methods.breadcrumbs import Breadcrumbs, breadcrumb_mask
from merge_bench.merging.methods.dare import Dare, drop_mask, mask_seed
from merge_bench.merging.methods.ops import count_of, disjoint_mean, elect_sign, is_zero, percent_count, ties_combine
from merge_bench.merging.methods.tall_masks import TallMasks
from merge_bench.merging.methods.ties import Ties


def T(rows):
    return torch.tensor(rows, dtype=torch.float32)


def stream(mats: dict):
    """A ModuleStream over {key: [delta per task]}, re-iterable."""
    return lambda: iter(list(mats.items()))


def merge_all(method, mats: dict, order=None):
    method.prepare(stream(mats))
    return {key: method.merge(mats[key], key) for key in (order or list(mats))}


def random_lowrank(seed, n=12, m=9, r=3):
    gen = torch.Generator().manual_seed(seed)
    return LowRank(torch.randn(n, r, generator=gen), torch.randn(r, m, generator=gen))


# ---------------------------------------------------------------- ops


def test_exact_decimal_counts():
    assert int(100 * 0.29) == 28  # what float arithmetic would give
    assert count_of(100, 0.29) == 29
    assert count_of(10, 0.15) == 1
    assert percent_count(100, 7.0) == 7
    assert percent_count(7, 20.0) == 1  # ⌊1.4⌋
    assert percent_count(5, 100.0) == 5


def test_is_zero():
    assert is_zero(LowRank.zeros(3, 4))
    assert is_zero(LowRank(torch.zeros(3, 2), torch.ones(2, 4)))
    assert is_zero(torch.zeros(3, 4))
    assert not is_zero(LowRank(torch.ones(3, 1), torch.ones(1, 4)))
    assert not is_zero(T([[0.0, 1e-30]]))


def test_ties_combine_matches_stacked_ops():
    gen = torch.Generator().manual_seed(0)
    xs = torch.randn(5, 30, 20, generator=gen)
    xs[torch.rand(xs.shape, generator=gen) < 0.3] = 0.0
    expected = disjoint_mean(xs, elect_sign(xs))
    assert torch.allclose(ties_combine(lambda t: xs[t].clone(), 5), expected, atol=1e-6)


# ---------------------------------------------------------------- ties


def test_ties_local_hand_example():
    # k = 50 % of 4 entries → keep the 2 largest |x| per matrix (local trim)
    t1 = T([[4, -1], [2, 0.5]])  # 2nd largest |x| = 2 → [[4, 0], [2, 0]]
    t2 = T([[-3, -2], [1, 6]])  # 2nd largest = 3 → [[-3, 0], [0, 6]]
    t3 = T([[2, 1], [-1, 3]])  # 2nd largest = 2 → [[2, 0], [0, 3]]
    # sum [[3, 0], [2, 9]] → signs [[+, 0], [+, +]]
    # disjoint means: (4 + 2)/2 = 3; nothing; 2; (6 + 3)/2 = 4.5; then × λ = 2
    out = merge_all(Ties(k=50.0, trim="local", lam=2.0), {"w": [t1, t2, t3]})["w"]
    assert out.dtype == torch.float32
    assert torch.equal(out, T([[6, 0], [4, 9]]))


def two_matrix_case():
    # task 1 targets a (big values) and b (small values); task 2 targets only b
    return {
        "a": [T([[10, 9], [8, 7]]), LowRank.zeros(2, 2)],
        "b": [T([[1, 2], [3, 4]]), T([[1, -1], [5, -6]])],
    }


def test_ties_global_vs_local():
    mats = two_matrix_case()
    glob = merge_all(Ties(k=50.0), mats)
    # task 1: ⌊8·0.5⌋ = 4th largest of all 8 entries = 7 → all of a kept, none of b.
    # task 2 targets b only: numel 4, ⌊4·0.5⌋ = 2nd largest = 5 → [[0, 0], [5, -6]]
    # (counting its untouched a would give the 4th largest, 1, and keep all of b).
    assert torch.equal(glob["a"], T([[10, 9], [8, 7]]))
    assert torch.equal(glob["b"], T([[0, 0], [5, -6]]))
    loc = merge_all(Ties(k=50.0, trim="local"), mats)
    # a: task 1 keeps 10, 9 (2nd largest = 9)
    # b: task 1 keeps 3, 4 (2nd largest = 3); task 2 keeps 5, −6
    #    sum [[0, 0], [8, −2]] → (1,0): (3 + 5)/2 = 4; (1,1): sign −, only −6 agrees
    assert torch.equal(loc["a"], T([[10, 9], [0, 0]]))
    assert torch.equal(loc["b"], T([[0, 0], [4, -6]]))


def test_ties_global_threshold_is_brute_force_over_concatenation():
    keys = [f"m{i}" for i in range(4)]
    shapes = [(12, 9), (7, 5), (30, 3), (1, 40)]
    mats = {}
    for i, (key, (n, m)) in enumerate(zip(keys, shapes)):
        deltas = []
        for t in range(3):
            gen = torch.Generator().manual_seed(100 * i + t)
            deltas.append(LowRank(torch.randn(n, 2, generator=gen), torch.randn(2, m, generator=gen)))
        mats[key] = deltas
    mats["m2"][1] = LowRank.zeros(30, 3)  # task 1 does not target m2
    for k in (1.0, 20.0, 33.3, 100.0):
        method = Ties(k=k)
        method.prepare(stream(mats))
        for t in range(3):
            flat = torch.cat([mats[key][t].dense().reshape(-1) for key in keys if not is_zero(mats[key][t])])
            count = math.floor(flat.numel() * k / 100 + 1e-9)
            assert method.thresholds[t] == float(torch.sort(flat.abs(), descending=True).values[count - 1])
        # the stream order does not matter
        rev = Ties(k=k)
        rev.prepare(lambda: iter(reversed(list(mats.items()))))
        assert rev.thresholds == method.thresholds


@pytest.mark.parametrize("trim", ["global", "local"])
def test_ties_k100_agreeing_signs_is_the_mean(trim):
    gen = torch.Generator().manual_seed(1)
    sign = torch.where(torch.rand(8, 6, generator=gen) < 0.5, -1.0, 1.0)
    taus = [sign * (torch.rand(8, 6, generator=gen) + 0.1) for _ in range(4)]
    out = merge_all(Ties(k=100.0, trim=trim), {"w": taus})["w"]
    assert torch.allclose(out, torch.stack(taus).mean(0), atol=1e-6)
    simple = get_method("simple_avg")().merge(taus, "w")
    assert torch.allclose(out, simple, atol=1e-6)


def test_ties_k0_keeps_nothing_and_bad_params():
    out = merge_all(Ties(k=0.0), {"w": [T([[1, 2]]), T([[3, -4]])]})["w"]
    assert torch.equal(out, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="percent"):
        Ties(k=120.0)
    with pytest.raises(ValueError, match="prepare"):
        Ties().merge([T([[1.0]])], "w")
    with pytest.raises(ValueError, match="not one of"):
        Ties(trim="row")


# ---------------------------------------------------------------- tall_masks


def test_tall_masks_hand_example_and_strict_boundary():
    t1, t2 = T([[1, 1.5, -2]]), T([[3, 1.5, 2]])
    # α = 0.5: τ_MTL = 0.5·[4, 3, 0] = [2, 1.5, 0]; λ = 1
    # m1: 1 > |2 − 1| = 1 no (equality); 1.5 > 0 yes; 2 > |0 + 2| = 2 no (equality)
    # m2: 3 > 1 yes;                     1.5 > 0 yes; 2 > 2 no
    # votes [1, 2, 0]
    one = TallMasks(alpha=0.5, lam=1.0, k=1).merge([t1, t2], "w")
    assert torch.equal(one, T([[2, 1.5, 0]]))
    two = TallMasks(alpha=0.5, lam=1.0, k=2).merge([t1, t2], "w")
    assert torch.equal(two, T([[0, 1.5, 0]]))
    # off the boundary: τ1[0] = 1.5 → τ_MTL[0] = 2.25, 1.5 > 0.75: both vote
    two = TallMasks(alpha=0.5, lam=1.0, k=2).merge([T([[1.5, 1.5, -2]]), t2], "w")
    assert torch.equal(two, T([[2.25, 1.5, 0]]))


def test_tall_masks_defaults_hand_example_with_missing_task():
    taus = [T([[1, 0, 0.1]]), T([[1, -2, 0.1]]), T([[-0.5, 3, 5]]), LowRank.zeros(1, 3)]
    # α = 0.4: Σ = [1.5, 1, 5.2] → τ_MTL = [0.6, 0.4, 2.08]; λ = 0.4, k = 2
    # col 0: 1 > 0.4·0.4 = 0.16 ✓, 1 > 0.16 ✓, 0.5 > 0.4·1.1 = 0.44 ✓ → 3 votes
    # col 1: 0 > 0.16 ✗, 2 > 0.4·2.4 = 0.96 ✓, 3 > 0.4·2.6 = 1.04 ✓ → 2 votes
    # col 2: 0.1 > 0.4·1.98 ✗ (twice), 5 > 0.4·2.92 ✓ → 1 vote → dropped
    # the missing task (zero) never votes: 0 > λ·|τ_MTL| is false
    out = TallMasks().merge(taus, "w")
    assert torch.allclose(out, T([[0.6, 0.4, 0]]), atol=1e-7)
    assert TallMasks().config == {"alpha": 0.4, "lam": 0.4, "k": 2}


# ---------------------------------------------------------------- dare


def test_mask_seed_is_stable():
    # fixed values: the masks of a published merge must not change between processes or versions
    # (blake2b of "seed\0task\0key"; Python's salted hash() would fail this across runs)
    assert mask_seed(0, 0, "w") == 3190226374245687423
    assert mask_seed(0, 1, "model.layers.0.self_attn.q_proj") == 561785629711867737
    assert len({mask_seed(s, t, k) for s in (0, 1) for t in (0, 1) for k in ("a", "b")}) == 8
    assert 0 <= mask_seed(123, 4, "model.layers.0.q_proj") < 2**63


def test_dare_hand_example_from_its_mask():
    x = T([[2, -4, 6, 8]])
    drop = drop_mask(x.shape, 0.5, 7, 0, "w")
    # each survivor doubles (÷ (1 − 0.5)); one task with combine=avg is just τ̃
    expected = torch.where(drop, torch.zeros_like(x), 2 * x)
    assert torch.equal(Dare(seed=7).merge([x], "w"), expected)
    no_rescale = torch.where(drop, torch.zeros_like(x), x)
    assert torch.equal(Dare(seed=7, rescale=False).merge([x], "w"), no_rescale)


def test_dare_p0_is_avg_task_arithmetic_and_ties():
    taus = [T([[1, -2], [3, 4]]), T([[3, 2], [-1, 0]])]
    assert torch.equal(Dare(p=0.0).merge(taus, "w"), T([[2, 0], [1, 2]]))  # the mean
    ta = Dare(p=0.0, combine="task_arithmetic", lam=0.5).merge(taus, "w")
    assert torch.equal(ta, T([[2, 0], [1, 2]]))  # 0.5·Σ
    mats = two_matrix_case()
    for trim in ("global", "local"):
        dare = merge_all(Dare(p=0.0, combine="ties", k=50.0, trim=trim), mats)
        ties = merge_all(Ties(k=50.0, trim=trim), mats)
        assert all(torch.equal(dare[key], ties[key]) for key in mats)


def test_dare_p1_without_rescale_drops_everything():
    assert torch.equal(Dare(p=1.0, rescale=False).merge([T([[1, 2]])], "w"), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="rescale"):
        Dare(p=1.0)
    with pytest.raises(ValueError, match="probability"):
        Dare(p=1.5, rescale=False)


def dare_mats():
    mats = {f"layer{i}": [random_lowrank(10 * i + t) for t in range(3)] for i in range(4)}
    mats["layer2"][0] = LowRank.zeros(12, 9)  # a task that does not target layer2
    return mats


@pytest.mark.parametrize("combine", ["avg", "task_arithmetic", "ties"])
def test_dare_seeds_and_order_independence(combine):
    mats = dare_mats()
    keys = list(mats)
    a = merge_all(Dare(combine=combine, seed=5), mats)
    b = merge_all(Dare(combine=combine, seed=5), dict(reversed(list(mats.items()))), order=keys[::-1])
    c = merge_all(Dare(combine=combine, seed=6), mats)
    for key in keys:
        assert torch.equal(a[key], b[key])
        assert not torch.isnan(a[key]).any()
    assert any(not torch.equal(a[key], c[key]) for key in keys)


def test_dare_drop_fraction_and_expectation():
    x = torch.ones(1000, 1000)
    for p in (0.5, 0.9):
        drop = drop_mask(x.shape, p, 0, 0, "big")
        assert abs(drop.float().mean().item() - p) < 0.005  # std of the mean ≈ 0.0005
    out = Dare(p=0.7).merge([x], "big")
    # survivors are 1/0.3; the mean of the output estimates E[τ̃] = τ = 1 (std ≈ 0.0015)
    assert abs(out.mean().item() - 1.0) < 0.01
    kept = out[out != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.3))
    # different tasks and matrices draw different masks
    assert not torch.equal(drop_mask((50, 50), 0.5, 0, 0, "k"), drop_mask((50, 50), 0.5, 0, 1, "k"))
    assert not torch.equal(drop_mask((50, 50), 0.5, 0, 0, "k"), drop_mask((50, 50), 0.5, 0, 0, "k2"))


# ---------------------------------------------------------------- breadcrumbs


def test_breadcrumbs_hand_built_row():
    row = [0.5, -9, 3, -4, 0.1, 2, -0.2, 1, 0, 6]
    # m = 10, γ = 0.1 → g = 1, β = 0.3 → b = 3. |x| ranks: 9, 6, 4, 3, 2, 1, 0.5, 0.2, 0.1, 0
    # drop −9 (top 1), keep 6, −4, 3, drop the rest
    second = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]  # per row: drop 10, keep 9, 8, 7
    x = T([row, second])
    mask = breadcrumb_mask(x, 0.1, 0.3)
    assert torch.equal(x * mask, T([[0, 0, 3, -4, 0, 0, 0, 0, 0, 6], [0, 0, 0, 0, 0, 0, 7, 8, 9, 0]]))
    other = T([[0, 0, 0, 0, 0, 0, 0, 0, 0, 1]] * 2)  # a second task: keeps nothing (rank 0 is dropped)
    out = Breadcrumbs(gamma=0.1, beta=0.3, lam=0.5).merge([x, other, LowRank.zeros(2, 10)], "w")
    assert torch.equal(out, 0.5 * T([[0, 0, 3, -4, 0, 0, 0, 0, 0, 6], [0, 0, 0, 0, 0, 0, 7, 8, 9, 0]]))


def test_breadcrumbs_rounding_and_ties():
    # equal magnitudes rank by column index: γ = 0.25 of 4 → drop index 0, β = 0.5 → keep 1, 2
    assert breadcrumb_mask(T([[2, -2, 2, 1]]), 0.25, 0.5).tolist() == [[False, True, True, False]]
    # ⌊10·0.15⌋ = 1 dropped, ⌊10·0.25⌋ = 2 kept
    assert breadcrumb_mask(T([list(range(10, 0, -1))]), 0.15, 0.25).sum().item() == 2
    # defaults on a row of 100: ⌊1⌋ dropped, ⌊10⌋ kept — entries ranked 2nd to 11th
    x = torch.arange(100, 0, -1, dtype=torch.float32).reshape(1, 100)
    assert torch.equal(breadcrumb_mask(x, 0.01, 0.1)[0].nonzero().flatten(), torch.arange(1, 11))
    # 0.29 of 100 is 29 (float arithmetic would say 28)
    assert breadcrumb_mask(x, 0.0, 0.29).sum().item() == 29
    with pytest.raises(ValueError, match="gamma"):
        Breadcrumbs(gamma=0.5, beta=0.6)


def test_breadcrumbs_blocks_match_one_block(monkeypatch):
    import merge_bench.merging.methods.breadcrumbs as bc

    x = torch.randn(37, 50, generator=torch.Generator().manual_seed(2))
    whole = breadcrumb_mask(x, 0.1, 0.2)
    monkeypatch.setattr(bc, "BLOCK_ELEMENTS", 120)  # 2 rows per block
    assert torch.equal(bc.breadcrumb_mask(x, 0.1, 0.2), whole)
    assert torch.equal(whole.sum(1), torch.full((37,), 10))


# ---------------------------------------------------------------- all four


ALL = [
    ("ties", {}),
    ("ties", {"trim": "local"}),
    ("tall_masks", {}),
    ("dare", {}),
    ("dare", {"combine": "ties"}),
    ("breadcrumbs", {"beta": 0.5}),
]


@pytest.mark.parametrize("name,params", ALL)
def test_lowrank_and_dense_inputs_agree_and_missing_tasks_are_safe(name, params):
    mats = dare_mats()
    mats["layer3"][1] = torch.zeros(12, 9)  # a dense zero for a missing task
    cls = get_method(name)
    assert cls.lowrank is False
    low = merge_all(cls(**params), mats)
    densified = {k: [d.dense() if isinstance(d, LowRank) else d for d in v] for k, v in mats.items()}
    dense = merge_all(cls(**params), densified)
    bf16 = merge_all(cls(**params), {k: [d.to(torch.bfloat16) for d in v] for k, v in mats.items()})
    for key in mats:
        assert low[key].dtype == torch.float32 and low[key].shape == (12, 9)
        assert torch.isfinite(low[key]).all() and torch.isfinite(bf16[key]).all()
        assert bf16[key].dtype == torch.float32
        assert torch.allclose(low[key], dense[key], atol=1e-5)
        assert low[key].abs().sum() > 0


# ---------------------------------------------------------------- fast paths == definitions


def sorted_rank_mask(x, gamma, beta):
    """breadcrumb_mask's definition: ranks g … g + b − 1 of a stable descending sort, per row."""
    m = x.shape[-1]
    g, b = count_of(m, gamma), count_of(m, beta)
    order = torch.sort(x.abs(), dim=-1, descending=True, stable=True).indices
    keep = torch.zeros(m, dtype=torch.bool)
    keep[g:g + b] = True
    return torch.zeros(x.shape, dtype=torch.bool).scatter_(-1, order, keep.expand_as(order))


@pytest.mark.parametrize("gamma,beta", [(0.01, 0.1), (0.0, 0.3), (0.1, 0.2), (0.2, 0.8)])
def test_breadcrumb_selection_equals_stable_sort_with_ties(gamma, beta, monkeypatch):
    import merge_bench.merging.methods.breadcrumbs as bc

    monkeypatch.setattr(bc, "BLOCK_ELEMENTS", 300)  # several row blocks
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(40, 100, generator=gen)
    x[:10] = x[:10].to(torch.bfloat16).float().round()  # rows full of tied magnitudes, both signs
    x[10:12] = 0.0  # all-zero rows (an untouched task)
    x[12, :50] = 2.0  # a tie group straddling both boundaries
    x[13] = -x[13].abs()
    assert torch.equal(breadcrumb_mask(x, gamma, beta), sorted_rank_mask(x, gamma, beta))


def test_trim_in_place_equals_trim():
    from merge_bench.merging.methods.ops import trim, trim_

    gen = torch.Generator().manual_seed(12)
    x = (torch.randn(5000, generator=gen) * 3).to(torch.bfloat16).float()
    x[:100] = 0.0
    for thr in [0.0, float(x.abs()[7]), float(x.abs().max()), 1e-45, math.inf]:
        assert torch.equal(trim_(x.clone(), thr), trim(x, thr)), thr


def test_ties_merge_rows_equals_ties_combine(monkeypatch):
    import merge_bench.merging.methods.ops as ops

    monkeypatch.setattr(ops, "BLOCK", 60)  # several row blocks, a short last one
    gen = torch.Generator().manual_seed(13)
    xs = torch.randn(5, 31, 20, generator=gen).round()  # integers: exact zeros and sign ties
    expected = ties_combine(lambda t: xs[t].clone(), 5)
    got = ops.ties_merge_rows(lambda t, rows, out: out.copy_(xs[t][rows]), 5, (31, 20), torch.device("cpu"))
    assert torch.equal(got, expected)
    assert torch.equal(got, disjoint_mean(xs, elect_sign(xs)))


@pytest.mark.parametrize("name,params", ALL + [("ties", {"k": 35.0})])
def test_row_blocks_do_not_change_the_merge(name, params, monkeypatch):
    import merge_bench.merging.methods.ops as ops

    mats = dare_mats()
    whole = merge_all(get_method(name)(**params), mats)
    monkeypatch.setattr(ops, "BLOCK", 20)  # 2 rows of 9 per block
    blocked = merge_all(get_method(name)(**params), mats)
    for key in mats:
        assert torch.equal(whole[key], blocked[key]), key


def test_tall_masks_matches_the_formula_on_random_inputs():
    gen = torch.Generator().manual_seed(14)
    taus = [torch.randn(13, 7, generator=gen) for _ in range(4)]
    mtl = 0.4 * sum(taus)
    votes = sum((t.abs() > 0.4 * (mtl - t).abs()).int() for t in taus)
    assert torch.allclose(TallMasks().merge(taus, "w"), torch.where(votes >= 2, mtl, torch.zeros_like(mtl)),
                          atol=1e-6)
