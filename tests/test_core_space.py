"""Core Space (core_<method>), CART and SVC (<method>+svc): independent NumPy references written from the
papers' formulas, factor path = dense path, the exact cases (linear rules lossless, CART = mean)."""
import math

import numpy as np
import pytest
import torch

from merge_bench.merging.delta import LowRank, dense
from merge_bench.merging.methods import BUILTIN, get_method
from merge_bench.merging.methods.core import balanced, core_basis, stack
from merge_bench.merging.methods.dare import drop_mask

CORE = ("core_task_arithmetic", "core_ties", "core_dare", "core_tsv", "core_iso_c", "core_cart")


def lora(seed, n, m, r, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return LowRank(scale * torch.randn(n, r, generator=gen) / math.sqrt(r), torch.randn(r, m, generator=gen))


def balanced_lora(seed, n, m, r):
    """B = U·Σ^½, A = Σ^½·Vᵀ with distinct σ and the sign convention of ``core.balanced``."""
    gen = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(n, r, generator=gen, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(m, r, generator=gen, dtype=torch.float64))[0]
    S = torch.sort(torch.rand(r, generator=gen, dtype=torch.float64) + 0.5, descending=True).values
    sign = torch.sign(U.gather(0, U.abs().argmax(0, keepdim=True)))[0]
    U, V = U * sign, V * sign
    return LowRank((U * S.sqrt()).float(), (S.sqrt()[:, None] * V.T).float())


def mats(make=lora):
    return {"a": [make(i, 30, 20, 3) for i in range(3)], "b": [make(10 + i, 24, 30, 2) for i in range(3)]}


def run(name, inputs, **params):
    method = get_method(name)(**params)
    method.prepare(lambda: iter(list(inputs.items())))
    return {key: method.merge(deltas, key) for key, deltas in inputs.items()}


def npy(x):
    return dense(x).detach().double().numpy() if not isinstance(x, np.ndarray) else x


def rel(a, b):
    a, b = npy(a), npy(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def densified(inputs):
    return {key: [dense(d) for d in deltas] for key, deltas in inputs.items()}


# ------------------------------------------------------------------ NumPy references (float64)


def np_rank(S, shape):
    return int((S > S[0] * max(shape) * np.finfo(np.float32).eps).sum()) if len(S) and S[0] > 0 else 0


def np_cores(deltas):
    """The reference's bases: U_B of [B_1 … B_T], V_A of [A_1; …; A_T]; cores U_Bᵀ·B_t·A_t·V_Aᵀ."""
    B = np.hstack([npy(d.B) for d in deltas])
    A = np.vstack([npy(d.A) for d in deltas])
    U, Sb, _ = np.linalg.svd(B, full_matrices=False)
    _, Sa, Vh = np.linalg.svd(A, full_matrices=False)
    UB, VA = U[:, :np_rank(Sb, B.shape)], Vh[:np_rank(Sa, A.shape)]
    return UB, VA, [UB.T @ npy(d.B) @ npy(d.A) @ VA.T for d in deltas]


def np_ties_global(cores_by_key, k, lam):
    T = len(next(iter(cores_by_key.values())))
    thr = []
    for t in range(T):
        flat = np.concatenate([c[t].ravel() for c in cores_by_key.values()])
        count = math.floor(flat.size * k / 100)
        thr.append(np.sort(np.abs(flat))[::-1][count - 1] if count else np.inf)
    out = {}
    for key, cores in cores_by_key.items():
        Y = np.stack([np.where(np.abs(c) >= th, c, 0.0) for c, th in zip(cores, thr)])
        s = np.sign(Y.sum(0))
        agree = (np.sign(Y) == s) & (Y != 0)
        out[key] = lam * np.where(agree, Y, 0).sum(0) / np.maximum(agree.sum(0), 1)
    return out


def np_cart(taus, rho, lam, alpha):
    mean = sum(taus) / len(taus)
    k = math.ceil(rho * min(taus[0].shape))
    out = mean.copy()
    for tau in taus:
        U, S, Vh = np.linalg.svd(tau - mean, full_matrices=False)
        out += lam * (U[:, :k] * S[:k]) @ Vh[:k]
    return alpha * out


def np_tsv(taus, alpha=1.0):
    T, p = len(taus), min(taus[0].shape)
    Us, Ss, Vs = [], [], []
    for tau in taus:
        U, S, Vh = np.linalg.svd(tau, full_matrices=False)
        k = min(p // T, np_rank(S, tau.shape))
        Us.append(U[:, :k]), Ss.append(S[:k]), Vs.append(Vh[:k].T)

    def polar(M):
        P, _, Qh = np.linalg.svd(M, full_matrices=False)
        return P @ Qh
    return alpha * polar(np.hstack(Us)) @ np.diag(np.concatenate(Ss)) @ polar(np.hstack(Vs)).T


def np_svc(merged, taus, alpha):
    U, S, Vh = np.linalg.svd(merged, full_matrices=False)
    k = np_rank(S, merged.shape)
    U, S, Vh = U[:, :k], S[:k], Vh[:k]
    total = np.zeros(k)
    for tau in taus:
        for r in range(k):
            a_merge, a_task = S[r] * Vh[r], U[:, r] @ tau
            norm = a_task @ a_task
            total[r] += max(alpha, a_merge @ a_task / norm) if norm > 0 else alpha
    return U @ np.diag(len(taus) / total * S) @ Vh


# ------------------------------------------------------------------ registry


def test_core_variants_are_registered_with_the_inner_grids():
    names = {cls.name: cls for cls in BUILTIN}
    for name in CORE:
        cls, inner = names[name], names[name[len("core_"):]]
        assert cls.lowrank and cls.params == inner.params and cls.search_grid() == inner.search_grid()
    assert names["core_dare"].search_grid({"combine": "task_arithmetic"})[0][0] == "lam"  # dare's own rule


# ------------------------------------------------------------------ Core Space


def test_core_basis_reconstructs_every_task_exactly():
    deltas = mats()["a"] + [LowRank.zeros(30, 20)]
    B, A, ranks = stack(deltas, (30, 20))
    basis = core_basis(B, A, ranks)
    UB = (B @ basis.WB.float()).double()
    VA = (basis.WA.T.float() @ A).double()
    assert torch.allclose(UB.T @ UB, torch.eye(UB.shape[1], dtype=torch.float64), atol=1e-5)
    for d, C in zip(deltas, basis.cores):
        assert rel(UB @ C.double() @ VA, dense(d)) < 1e-5 or not dense(d).any()
    assert not basis.cores[-1].any() and basis.cores[0].shape == (9, 9)


@pytest.mark.parametrize("name", ["core_task_arithmetic", "core_tsv", "core_iso_c"])
def test_rotation_invariant_rules_are_lossless_in_core_space(name):
    inputs = mats()
    core, full = run(name, inputs), run(name[len("core_"):], inputs)
    for key in inputs:
        assert isinstance(core[key], LowRank) and rel(core[key], full[key]) < 1e-5


def test_core_ties_matches_the_reference_on_raw_factors():
    inputs = mats()  # unbalanced factors: the reference's basis of the raw stacked B and A
    bases = {key: np_cores(deltas) for key, deltas in inputs.items()}
    merged = np_ties_global({key: b[2] for key, b in bases.items()}, 20.0, 1.0)
    out = run("core_ties", inputs)
    for key, (UB, VA, _) in bases.items():
        assert rel(out[key], UB @ merged[key] @ VA) < 1e-5


def test_core_dare_matches_the_reference_masks():
    inputs = mats()
    out = run("core_dare", inputs, p=0.3, seed=4)
    for key, deltas in inputs.items():
        UB, VA, cores = np_cores(deltas)
        kept = [np.where(drop_mask(c.shape, 0.3, 4, t, key).numpy(), 0.0, c) / 0.7 for t, c in enumerate(cores)]
        assert rel(out[key], UB @ (sum(kept) / 3) @ VA) < 1e-5


def test_core_tsv_and_core_cart_use_the_core_size():
    inputs = {"a": [lora(i, 40, 36, 4) for i in range(3)]}
    UB, VA, cores = np_cores(inputs["a"])
    assert rel(run("core_tsv", inputs, alpha=1.5)["a"], UB @ np_tsv(cores, 1.5) @ VA) < 1e-5
    expected = np_cart(cores, 0.2, 0.5, 2.0)  # k = ⌈0.2·12⌉ = 3 of the 12×12 core
    assert rel(run("core_cart", inputs, rank_ratio=0.2, lam=0.5, alpha=2.0)["a"], UB @ expected @ VA) < 1e-5


@pytest.mark.parametrize("name", CORE)
def test_core_factor_path_equals_dense_path_on_balanced_factors(name):
    # A dense input is split in the balanced way, so LoRAs given in that form meet the same basis.
    inputs = mats(balanced_lora)
    factor, dense_out = run(name, inputs), run(name, densified(inputs))
    for key in inputs:
        assert isinstance(factor[key], LowRank) and rel(factor[key], dense_out[key]) < 1e-5


def test_balanced_split_of_a_dense_input():
    tau = dense(lora(3, 25, 18, 4))
    f = balanced(tau, tau.shape)
    assert f.rank == 4 and rel(f, tau) < 1e-6
    assert torch.allclose(f.B.T @ f.B, f.A @ f.A.T, atol=1e-5)  # the same Σ on both sides


def test_core_all_zero_inputs_give_zero():
    out = run("core_ties", {"w": [LowRank.zeros(8, 6), LowRank.zeros(8, 6)]})["w"]
    assert isinstance(out, LowRank) and out.shape == (8, 6) and not dense(out).any()


# ------------------------------------------------------------------ CART


def test_cart_on_lora_in_full_space_is_the_mean_when_k_covers_the_stacked_rank():
    inputs = {"w": [lora(i, 300, 320, 3) for i in range(3)]}  # k = ⌈0.04·300⌉ = 12 ≥ R = 9
    for lam in (0.1, 2.0):
        out = run("cart", inputs, lam=lam, alpha=1.5)["w"]
        assert rel(out, run("simple_avg", inputs)["w"].scaled(1.5)) < 1e-5


def test_cart_truncates_when_k_is_below_the_stacked_rank():
    inputs = {"w": [lora(i, 30, 20, 3) for i in range(3)]}  # k = ⌈0.1·20⌉ = 2 < R = 9
    taus = [npy(d) for d in inputs["w"]]
    out = run("cart", inputs, rank_ratio=0.1, lam=0.7)["w"]
    assert isinstance(out, LowRank) and rel(out, np_cart(taus, 0.1, 0.7, 1.0)) < 1e-5
    assert rel(out, run("simple_avg", inputs)["w"]) > 1e-2
    assert rel(run("cart", densified(inputs), rank_ratio=0.1, lam=0.7)["w"], out) < 1e-5


# ------------------------------------------------------------------ SVC


@pytest.mark.parametrize("name", ["task_arithmetic+svc", "ties+svc", "wudi+svc", "core_ties+svc"])
def test_svc_matches_the_formula(name):
    inputs = mats(balanced_lora)
    merged = run(name[: -len("+svc")], inputs)
    out = run(name, inputs, svc_alpha=0.5)
    for key, deltas in inputs.items():
        expected = np_svc(npy(merged[key]), [npy(d) for d in deltas], 0.5)
        assert rel(out[key], expected) < 1e-5
        assert isinstance(out[key], LowRank) == isinstance(merged[key], LowRank)
    dense_out = run(name, densified(inputs), svc_alpha=0.5)
    assert all(rel(dense_out[key], out[key]) < 1e-5 for key in inputs)


def test_svc_on_one_task_with_alpha_one_changes_nothing():
    # One task: s = 1 in every direction, γ = 1 / max(α, 1) = 1.
    tau = lora(1, 20, 16, 3)
    out = run("simple_avg+svc", {"w": [tau]}, svc_alpha=1.0)["w"]
    assert rel(out, tau) < 1e-5


def test_svc_shrinks_a_direction_every_task_shares():
    # Two tasks identical: task arithmetic at λ = 1 doubles it, s = 2 for each, γ = 2/4: back to τ.
    tau = lora(2, 20, 16, 3)
    out = run("task_arithmetic+svc", {"w": [tau, tau]}, lam=1.0, svc_alpha=0.1)["w"]
    assert rel(out, tau) < 1e-5


def test_svc_variants_keep_the_inner_parameters_and_grid():
    cls = get_method("ties+svc")
    assert cls.name == "ties+svc" and cls.search_grid() == get_method("ties").search_grid()
    assert [p.name for p in cls.params] == ["k", "trim", "lam", "svc_alpha"] and not cls.lowrank
    assert get_method("regmean+svc").data == "calibration" and get_method("tsv+svc").lowrank
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        get_method("nope+svc")
    with pytest.raises(ValueError, match="already has a parameter 'svc_alpha'"):
        get_method("ties+svc+svc")
