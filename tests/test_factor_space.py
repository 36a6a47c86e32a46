"""The core-space machinery under the SVD-family methods: Gram-based spans, batched factor SVDs,
reduce/lift, and the engine merging several matrices at once."""
import math

import pytest
import torch

from merge_bench.merging.delta import LowRank, concat, dense, span, svd, svds
from merge_bench.merging.engine import merge
from merge_bench.merging.methods import get_method
from merge_bench.merging.methods.factor import reduce


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def lora(seed, n, m, r, scale=1.0):
    return LowRank(scale * randn(n, r, seed=seed, dtype=torch.float32) / math.sqrt(r),
                   randn(r, m, seed=seed + 100, dtype=torch.float32))


def check_span(F, rank):
    W, C = span(F)
    Q = F.double() @ W
    assert W.shape == (F.shape[1], rank) and C.shape == (rank, F.shape[1])
    assert torch.allclose(Q.T @ Q, torch.eye(rank, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(Q @ C, F.double(), atol=1e-10 * float(F.double().norm()))


def test_span_of_a_well_conditioned_factor():
    check_span(randn(50, 6), 6)  # Cholesky path


def test_span_drops_zero_and_duplicate_columns():
    F = randn(40, 5)
    F[:, 1] = 0.0  # an untrained LoRA column
    F[:, 4] = 3.0 * F[:, 0]  # exactly dependent: the Cholesky fails, the eigendecomposition truncates
    check_span(F, 3)
    W, C = span(F)
    assert not C[:, 1].any() and not W[1].any()


def test_span_keeps_a_column_of_tiny_scale():
    # Columns are scaled to unit norm before the Gram, so a task 1e-6 smaller keeps its direction.
    F = randn(30, 4)
    F[:, 3] *= 1e-6
    check_span(F, 4)


def test_span_of_a_zero_factor_is_empty():
    W, C = span(torch.zeros(10, 3))
    assert W.shape == (3, 0) and C.shape == (0, 3)


def test_batched_span_keeps_the_batch_rectangular():
    F = randn(3, 20, 4)
    F[1, :, 2] = F[1, :, 0]  # one member rank-deficient
    W, C = span(F)
    assert W.shape == (3, 4, 4) and C.shape == (3, 4, 4)
    for t in range(3):
        assert torch.allclose(F[t] @ W[t] @ C[t], F[t], atol=1e-10)
    assert int((C[1].abs().sum(dim=1) > 0).sum()) == 3  # the dropped direction is a zero row


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_svds_equal_dense_svds(dtype):
    deltas = [lora(1, 30, 20, 4).to(dtype), lora(2, 30, 20, 2).to(dtype), LowRank.zeros(30, 20, dtype=dtype)]
    for d, (U, S, Vh) in zip(deltas, svds(deltas)):
        assert U.shape == (30, 4) and S.shape == (4,) and Vh.shape == (4, 20)  # padded to the largest rank
        expected = torch.linalg.svdvals(dense(d).double())
        assert torch.allclose(S, expected[:4], atol=1e-5 * max(1.0, float(expected[0])))
        assert torch.allclose((U.double() * S) @ Vh.double(), dense(d).double(), atol=1e-5)
        k = int((S > 1e-6).sum())
        assert torch.allclose(U[:, :k].double().T @ U[:, :k].double(), torch.eye(k, dtype=torch.float64), atol=1e-5)
    assert svd(deltas[1])[1].shape == (2,)  # one LowRank alone keeps its own rank


@pytest.mark.parametrize("right", [True, False])
def test_reduce_then_lift_is_exact(right):
    deltas = [lora(3, 40, 24, 3), lora(4, 40, 24, 2), LowRank.zeros(40, 24)]
    space = reduce(deltas, right=right)
    assert space.WB.shape[1] == 5 and (not right or space.WA.shape[1] == 5)
    for d, c in zip(deltas, space.deltas):
        assert torch.allclose(dense(space.lift(c.B, c.A)).double(), dense(d).double(), atol=1e-5)
        # Cores are the task vectors in orthonormal coordinates: the same singular values.
        assert torch.allclose(svd(c)[1][:2], svd(d)[1][:2].double(), atol=1e-5)
    total = concat(space.deltas)
    assert torch.allclose(dense(space.lift(total.B, total.A)), dense(concat(deltas)), atol=1e-5)


def test_tsv_of_an_adapter_with_itself_is_that_adapter():
    # Ũ = [U, U] is rank-deficient; its polar partial isometry U·[I I]/√2 with ŝ = [S, S] gives
    # U·(S + S)/2·Vᵀ = τ exactly, on both paths (a full polar factor would add arbitrary directions).
    tau = lora(5, 24, 18, 3)
    twice = [tau, LowRank(tau.B.clone(), tau.A.clone())]
    for inputs in (twice, [dense(d) for d in twice]):
        out = get_method("tsv")().merge(inputs, "w")
        assert torch.allclose(dense(out), dense(tau), atol=1e-5)


def write_adapters(root, n_tasks=3):
    from safetensors.torch import save_file

    paths = []
    for t in range(n_tasks):
        path = root / f"a{t}"
        path.mkdir()
        tensors = {}
        for layer in range(4):
            for module, (out_f, in_f) in {"q_proj": (24, 16), "v_proj": (8, 16)}.items():
                prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
                tensors[f"{prefix}.lora_A.weight"] = randn(2, in_f, seed=10 * t + layer, dtype=torch.float32)
                tensors[f"{prefix}.lora_B.weight"] = randn(out_f, 2, seed=10 * t + layer + 5, dtype=torch.float32)
        save_file(tensors, path / "adapter_model.safetensors")
        (path / "adapter_config.json").write_text(
            '{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]}')
        paths.append(path)
    return paths


@pytest.mark.parametrize("method", ["iso_cts", "knots"])
def test_merging_matrices_concurrently_gives_the_sequential_result(tmp_path, method):
    # threads=2 merges two matrices at once (one intra-op thread each); threads=1 one at a time.
    paths = write_adapters(tmp_path)
    before = torch.get_num_threads()
    one = merge(method, paths, threads=1)
    two = merge(method, paths, threads=2)
    assert torch.get_num_threads() == before  # the process-wide setting is put back
    assert two.keys == one.keys  # same order
    for key in one.keys:
        assert torch.equal(dense(one.deltas[key]), dense(two.deltas[key])), key


def test_a_failure_in_a_concurrent_merge_is_raised(tmp_path):
    paths = write_adapters(tmp_path)
    cls = get_method("iso_c")

    class Failing(cls):
        def merge(self, deltas, key):
            if "layers.2." in key:
                raise ValueError(f"no merge for {key}")
            return super().merge(deltas, key)

    with pytest.raises(ValueError, match="layers.2"):
        merge(Failing(), paths, threads=2)
