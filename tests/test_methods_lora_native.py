"""WUDI (closed form against long gradient runs), RobustMerge (the authors' factor-wise rule), CtM
(Tucker-2 bases, rank-r LoRA out) and PCB (dense, entry-wise): independent NumPy references, factor path =
dense path, and merged adapters that PEFT loads with the logits of the in-memory merge."""
import json
import math

import numpy as np
import pytest
import torch

import merge_bench
from merge_bench.merging.delta import LowRank, dense
from merge_bench.merging.methods import get_method
from merge_bench.merging.methods.wudi import wudi_loss

from test_core_space import balanced_lora, densified, lora, mats, npy, rel, run


# ------------------------------------------------------------------ WUDI


def np_wudi(taus):
    """X·ΣG = Σ τ·G with G = τᵀτ/‖τ‖², the minimum-norm solution (pinv)."""
    G = [t.T @ t / np.sum(t * t) for t in taus]
    return sum(t @ g for t, g in zip(taus, G)) @ np.linalg.pinv(sum(G), rcond=1e-10, hermitian=True)


def gradient_run(taus, steps, optimizer="gd"):
    """The objective minimised by gradient steps from the reference's start X = Σ τ_t (float64)."""
    T = [torch.tensor(t) for t in taus]
    X = torch.nn.Parameter(sum(T).clone())
    H = sum(t.T @ t / t.pow(2).sum() for t in T)
    if optimizer == "gd":  # step 1/L for the L = 2·λ_max(ΣG)-smooth objective
        opt = torch.optim.SGD([X], lr=1.0 / (2 * float(torch.linalg.eigvalsh(H)[-1])))
    else:  # the reference: Adam, lr 1e-5
        opt = torch.optim.Adam([X], lr=1e-5)
    for _ in range(steps):
        opt.zero_grad()
        wudi_loss(X, T).backward()
        opt.step()
    return X.detach().numpy()


@pytest.mark.parametrize("n, m, r, T", [(12, 10, 2, 3), (9, 5, 2, 3)])  # independent / overlapping row spaces
def test_wudi_closed_form_beats_long_gradient_runs(n, m, r, T):
    deltas = [lora(40 + t, n, m, r) for t in range(T)]
    taus = [npy(d) for d in deltas]
    out = run("wudi", {"w": deltas})["w"]
    assert isinstance(out, LowRank) and out.rank <= T * r
    closed = npy(out)
    assert rel(closed, np_wudi(taus)) < 1e-5

    def loss(X):
        return float(wudi_loss(torch.tensor(X), [torch.tensor(t) for t in taus]))
    gd = gradient_run(taus, 20000)
    adam = gradient_run(taus, 400, "adam")
    assert loss(closed) <= loss(gd) + 1e-9 and loss(closed) < loss(adam)
    assert rel(gd, closed) < 1e-3  # the long run converges to the closed form (its start is in the row space)
    if T * r <= m:  # independent row spaces: every task is reproduced on its own inputs
        assert loss(closed) < 1e-8


def test_wudi_factor_path_equals_dense_path_and_scales():
    inputs = mats()
    factor, dense_out = run("wudi", inputs, alpha=1.5), run("wudi", densified(inputs), alpha=1.5)
    for key, deltas in inputs.items():
        assert rel(factor[key], dense_out[key]) < 1e-5
        assert rel(factor[key], 1.5 * np_wudi([npy(d) for d in deltas])) < 1e-5


def test_wudi_ignores_a_task_that_does_not_target_the_matrix():
    deltas = [lora(1, 12, 10, 2), lora(2, 12, 10, 2)]
    with_zero = run("wudi", {"w": deltas + [LowRank.zeros(12, 10)]})["w"]
    assert rel(with_zero, run("wudi", {"w": deltas})["w"]) < 1e-6
    assert not dense(run("wudi", {"w": [LowRank.zeros(4, 3)] * 2})["w"]).any()


# ------------------------------------------------------------------ RobustMerge (authors' code, literally)


def np_robustmerge(Bs, As, mask_ratio=0.2, att_ratio=0.2, fuse=2.0):
    A, B = np.stack(As), np.stack(Bs)  # T×r×m, T×n×r

    def trimmed(x):
        flat = x.reshape(len(x), -1)
        kth = np.sort(np.abs(flat), axis=1)[:, int(flat.shape[1] * (1 - mask_ratio)) - 1][:, None]
        return (np.abs(flat) >= kth).reshape(x.shape) * x
    A_k, B_k = trimmed(A), trimmed(B)
    s = np.abs(A).sum(-1) / np.abs(A_k).sum(-1)
    floor = np.sort(s, axis=1)[:, int(s.shape[1] * (1 - att_ratio))][:, None]
    s = np.maximum(s, floor)
    return (fuse * (B_k * s[:, None, :]).sum(0) / s.sum(0)[None, :]) @ (fuse * A_k.sum(0))


def test_robustmerge_is_the_authors_rule():
    inputs = {"w": [lora(i, 40, 30, 5) for i in range(3)]}
    out = run("robustmerge", inputs)["w"]
    assert isinstance(out, LowRank) and out.rank == 5  # a LoRA of the inputs' rank
    expected = np_robustmerge([npy(d.B) for d in inputs["w"]], [npy(d.A) for d in inputs["w"]])
    assert rel(out, expected) < 1e-5
    expected = np_robustmerge([npy(d.B) for d in inputs["w"]], [npy(d.A) for d in inputs["w"]], 0.5, 0.4, 1.0)
    assert rel(run("robustmerge", inputs, keep=0.5, att_ratio=0.4, fuse_weight=1.0)["w"], expected) < 1e-5


def test_robustmerge_dense_inputs_are_split_in_the_balanced_way():
    inputs = mats(balanced_lora)
    factor, dense_out = run("robustmerge", inputs), run("robustmerge", densified(inputs))
    assert all(rel(factor[k], dense_out[k]) < 1e-5 for k in inputs)
    # it is factor-wise: another split of the same τ_t (here B·2, A/2 for one task) changes the merge
    moved = [LowRank(2 * d.B, d.A / 2) if t == 0 else d for t, d in enumerate(inputs["a"])]
    assert rel(run("robustmerge", {"a": moved})["a"], factor["a"]) > 1e-3


def test_robustmerge_leaves_out_a_task_that_does_not_target_the_matrix():
    deltas = [lora(1, 20, 16, 4), lora(2, 20, 16, 4)]
    assert rel(run("robustmerge", {"w": deltas + [LowRank.zeros(20, 16)]})["w"], run("robustmerge", {"w": deltas})["w"]) < 1e-6


# ------------------------------------------------------------------ CtM


def np_hooi(Xs, r):
    def top(M):
        return np.linalg.svd(M, full_matrices=False)[0][:, :r]
    U0, U1 = top(np.hstack(Xs)), top(np.hstack([x.T for x in Xs]))
    norm_sq, previous = sum(np.sum(x * x) for x in Xs), None
    for _ in range(1000):
        U0 = top(np.hstack([x @ U1 for x in Xs]))
        U1 = top(np.hstack([x.T @ U0 for x in Xs]))
        error = abs(norm_sq - sum(np.sum((U0.T @ x @ U1) ** 2) for x in Xs)) ** 0.5 / norm_sq ** 0.5
        if previous is not None and abs(previous - error) < 1e-6:
            break
        previous = error
    return U0, U1


def np_ctm(taus, r, beta, k, alpha):
    norms = [np.linalg.norm(t) for t in taus]
    mean = sum(norms) / len(norms)
    U, V = np_hooi([t * (beta + (1 - beta) * mean / n) for t, n in zip(taus, norms)], r)
    O = [U.T @ t @ V for t in taus]
    count = math.floor(r * r * k / 100)
    Y = np.stack([np.where(np.abs(o) >= np.sort(np.abs(o).ravel())[::-1][count - 1], o, 0.0) for o in O])
    s = np.sign(Y.sum(0))
    agree = (np.sign(Y) == s) & (Y != 0)
    return alpha * U @ (np.where(agree, Y, 0).sum(0) / np.maximum(agree.sum(0), 1)) @ V.T


def test_ctm_matches_a_full_space_reference_and_is_a_rank_r_lora():
    inputs = {"w": [lora(i, 40, 36, 4) for i in range(4)]}  # R = 16 > r = 6
    out = run("ctm", inputs, rank=6, beta=0.5, k=30.0, alpha=1.3)["w"]
    assert isinstance(out, LowRank) and out.rank == 6
    assert rel(out, np_ctm([npy(d) for d in inputs["w"]], 6, 0.5, 30.0, 1.3)) < 1e-5


@pytest.mark.parametrize("params", [{}, {"merge": "dare_ties", "seed": 2}, {"merge": "task_arithmetic", "beta": 1.0}])
def test_ctm_factor_path_equals_dense_path(params):
    inputs = {"a": [lora(i, 40, 36, 6) for i in range(4)], "b": [lora(9 + i, 30, 40, 5) for i in range(4)]}
    factor, dense_out = run("ctm", inputs, **params), run("ctm", densified(inputs), **params)
    for key in inputs:
        assert isinstance(factor[key], LowRank) and factor[key].rank == 16
        assert rel(factor[key], dense_out[key]) < 1e-5


def test_ctm_task_arithmetic_at_full_rank_is_the_sum():
    # r ≥ the joint ranks: the bases span every task, so the coordinates lose nothing.
    inputs = {"w": [lora(i, 20, 18, 2) for i in range(3)]}
    out = run("ctm", inputs, merge="task_arithmetic", alpha=1.0)["w"]
    assert out.rank == 6 and rel(out, run("task_arithmetic", inputs, lam=1.0)["w"]) < 1e-5


# ------------------------------------------------------------------ PCB


def np_pcb(taus, ratio, lam):
    X = np.stack([t.ravel() for t in taus])
    T, d = X.shape

    def clamp(x, lo_ratio, hi_ratio):
        srt = np.sort(x, axis=1)
        lo = srt[:, min(int(d * lo_ratio), d - 1)][:, None]
        hi = srt[:, int(d * (1 - hi_ratio) - 1)][:, None]
        return np.clip(x, lo, hi)

    def minmax(x):
        lo, hi = x.min(1, keepdims=True), x.max(1, keepdims=True)
        return (x - lo) / (hi - lo)
    mag = clamp(np.abs(X), 0.0001, 0.0001)
    beta = np.exp(T * minmax(mag) ** 2) * np.tanh(X * X.sum(0))
    scale = minmax(clamp(beta, 1 - ratio, 0))
    merged = (np.sign(X) * mag * scale).sum(0) / np.maximum(scale.sum(0), 1e-12)
    return lam * merged.reshape(taus[0].shape)


@pytest.mark.parametrize("ratio, lam", [(0.1, 1.2), (0.3, 1.0)])
def test_pcb_matches_the_reference(ratio, lam):
    inputs = {"w": [dense(lora(i, 120, 110, 4)) for i in range(3)]}
    inputs["w"][0][0, 0] = 50.0  # an outlier for the 0.01 % clip (d = 13200: one entry per tail)
    out = run("pcb", inputs, ratio=ratio, lam=lam)["w"]
    assert isinstance(out, torch.Tensor)
    assert rel(out, np_pcb([npy(t) for t in inputs["w"]], ratio, lam)) < 1e-5
    as_lora = {"w": [lora(i, 120, 110, 4) for i in range(3)]}
    assert rel(run("pcb", as_lora)["w"], run("pcb", densified(as_lora))["w"]) < 1e-6


def test_pcb_leaves_the_inputs_untouched_and_a_non_targeting_task_out():
    taus = [dense(lora(i, 30, 20, 3)) for i in range(2)]
    copies = [t.clone() for t in taus]
    out = run("pcb", {"w": taus + [torch.zeros(30, 20)]})["w"]
    assert all(torch.equal(a, b) for a, b in zip(taus, copies))
    assert rel(out, run("pcb", {"w": taus})["w"]) < 1e-6


# ------------------------------------------------------------------ written adapters


@pytest.mark.parametrize("method", ["wudi", "robustmerge", "ctm", "cart", "core_ties", "core_cart", "tsv+svc"])
def test_low_rank_methods_write_a_peft_adapter_that_peft_loads(micro_llama, micro_loras, method, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = merge_bench.merge(method, [str(p) for p in micro_loras], base=micro_llama, out=tmp_path / "out")
    assert result.output.format == "peft"
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert config["r"] <= 512
    ids = torch.tensor([[1, 17, 42, 99, 7, 250, 3]])
    with torch.no_grad():
        via_peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(micro_llama), tmp_path / "out")(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(micro_llama).eval()
        with merge_bench.merge(method, [str(p) for p in micro_loras]).apply_to(base):
            in_memory = base(input_ids=ids).logits
    torch.testing.assert_close(via_peft, in_memory, rtol=0, atol=1e-4)


def test_bad_parameters_are_refused_by_name():
    for name, params, message in [("ctm", {"beta": 1.5}, "beta must be in"), ("pcb", {"ratio": 0.0}, "ratio must be in"),
                                  ("robustmerge", {"keep": 0.0}, "keep must be in"), ("cart", {"rank_ratio": 2.0}, "rank_ratio")]:
        with pytest.raises(ValueError, match=message):
            get_method(name)(**params)
