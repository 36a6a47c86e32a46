"""merge_bench.merging.selection: the exact streaming k-th largest |x| against a full sort."""
import math

import pytest
import torch

from merge_bench.merging.selection import keep_top_fraction, kth_largest_abs


def brute(x: torch.Tensor, k: int) -> float:
    values = torch.sort(x.float().abs().reshape(-1), descending=True).values
    return float(values[k - 1])


def one(x):
    return lambda: [x]


def test_hand_example():
    x = torch.tensor([3.0, -5.0, 0.0, 5.0, 1.0])
    # |x| descending: 5, 5, 3, 1, 0
    assert [kth_largest_abs(one(x), k) for k in range(1, 6)] == [5.0, 5.0, 3.0, 1.0, 0.0]


def test_k_out_of_range():
    x = torch.tensor([2.0, -1.0])
    assert kth_largest_abs(one(x), 0) == math.inf  # keep nothing
    assert kth_largest_abs(one(x), -3) == math.inf
    assert kth_largest_abs(one(x), 3) == 0.0  # keep everything
    assert kth_largest_abs(lambda: [], 1) == 0.0
    assert kth_largest_abs(lambda: [torch.zeros(0)], 1) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_with_ties_negatives_zeros(seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3000, generator=gen)
    # a block of repeated magnitudes of both signs, plus exact zeros and negative zeros
    x[:400] = torch.tensor([0.75, -0.75, 1.5, -1.5]).repeat(100)
    x[400:700] = 0.0
    x[700:750] = -0.0
    x[750:760] = 1e-40  # subnormal
    x = x[torch.randperm(x.numel(), generator=gen)]
    for k in [1, 2, 17, 399, 400, 1500, 2249, 2250, 2251, 2299, 2300, 2999, 3000]:
        assert kth_largest_abs(one(x), k) == brute(x, k), k


def test_many_chunks_match_one_chunk():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(10_000, generator=gen) * torch.rand(10_000, generator=gen) ** 4
    sizes = [1, 2, 3, 0, 500, 1, 4000, 7, 5486]
    assert sum(sizes) == x.numel()
    chunks = list(x.split(sizes))
    # chunks of several shapes, including 2-d ones
    chunks = [c.reshape(-1, 1) if i % 2 else c for i, c in enumerate(chunks)]
    calls = []

    def stream():
        calls.append(1)
        return iter(chunks)

    for k in [1, 10, 2500, 9999, 10_000]:
        calls.clear()
        assert kth_largest_abs(stream, k) == brute(x, k)
        assert len(calls) == 2  # two passes, as documented


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    gen = torch.Generator().manual_seed(4)
    x = (torch.randn(4000, generator=gen) * 3).to(dtype)  # half precision: many exact ties
    assert x.abs().unique().numel() < x.numel()
    for k in [1, 100, 2000, 3999, 4000]:
        got = kth_largest_abs(lambda: list(x.split(333)), k)
        assert got == brute(x, k)
        assert float(torch.tensor(got).to(dtype)) == got  # a value of the input's dtype


def test_huge_and_tiny_magnitudes():
    x = torch.tensor([3e38, -1e-45, 1e-30, -2.5e20, 0.0, 7.0])
    for k in range(1, 7):
        assert kth_largest_abs(one(x), k) == brute(x, k)


def test_keep_top_fraction():
    x = torch.tensor([0.5, -4.0, 3.0, 3.0, -1.0, 2.0, 0.0, -3.0, 6.0, 1.0])
    # ⌊10·0.3⌋ = 3 → 3rd largest |x| is 3 (6, 4, 3, 3, 3): ties at the threshold are all kept
    assert keep_top_fraction(x, 0.3).tolist() == [False, True, True, True, False, False, False, True, True, False]
    assert not keep_top_fraction(x, 0.0).any()
    assert keep_top_fraction(x, 1.0).all()


def test_many_streams_match_brute_force(monkeypatch):
    import itertools

    import merge_bench.merging.selection as sel
    from merge_bench.merging.selection import kth_largest_abs_many

    monkeypatch.setattr(sel, "PIECE", 257)  # many pieces per chunk
    gen = torch.Generator().manual_seed(7)
    streams = []
    for s in range(4):
        x = torch.randn(2000 + 300 * s, generator=gen) * 10.0 ** (s - 2)
        x[: 200 * s] = x[0]  # duplicates of one magnitude …
        x[200 * s: 300 * s] = -x[0]  # … of both signs
        x[-50:] = 0.0
        streams.append(x[torch.randperm(x.numel(), generator=gen)])
    calls = []

    def chunks():  # the streams' chunks interleaved, plus an empty one
        calls.append(1)
        parts = itertools.zip_longest(*[x.split(611) for x in streams])
        for row in parts:
            yield from ((s, c) for s, c in enumerate(row) if c is not None)
        yield 2, torch.zeros(0)

    for ks in ([1, 2, 3, 4], [2000, 2300, 2600, 2900], [0, 5000, 1000, 17], [-1, 7, 2600, 3000]):
        calls.clear()
        got = kth_largest_abs_many(chunks, ks)
        for s, k in enumerate(ks):
            if k <= 0:
                assert got[s] == math.inf
            elif k > streams[s].numel():
                assert got[s] == 0.0
            else:
                assert got[s] == brute(streams[s], k), (s, k)
        assert len(calls) <= 2


@pytest.mark.parametrize("seed", [0, 1])
def test_against_kthvalue_with_negatives_zeros_and_duplicates(seed, monkeypatch):
    import merge_bench.merging.selection as sel

    monkeypatch.setattr(sel, "PIECE", 1000)
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(50_000, generator=gen) * 4).to(torch.bfloat16).float()  # bf16 values: many duplicates
    x[:5000] = 0.0
    x = x[torch.randperm(x.numel(), generator=gen)]
    for k in [1, 3, 999, 12_345, 44_999, 45_000, 45_001, 50_000]:
        expected = float(torch.kthvalue(x.abs(), x.numel() - k + 1).values)
        assert kth_largest_abs(lambda: list(x.reshape(100, 500).split(7)), k) == expected, k
