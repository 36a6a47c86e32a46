#!/usr/bin/env python
"""Time every registered merge method through the engine at Mistral-7B shapes, with peak memory.

Builds N random rank-r PEFT LoRA adapters on q/k/v of a Mistral-7B-shaped model (32 layers; q 4096×4096,
k and v 1024×4096) in a work directory, then runs each method in a fresh subprocess (so ``ru_maxrss`` is
that method's own peak) through ``merge_bench.merge`` including writing the output:
- low-rank results as a PEFT adapter (rank padded to a vLLM rank), the real deliverable;
- dense results as ``--format delta`` (one safetensors of Δ per matrix, in --dtype), because no 14 GB
  base checkpoint exists here; ``--format full`` would add one copy of the base tensors on top.
The timed region is the ``merge_bench.merge`` call: reading and hashing the inputs, the merge, the
write and the output hashes (not the Python/torch start-up).

Each worker runs with ``OMP_WAIT_POLICY=PASSIVE`` and ``--threads`` passed to ``merge_bench.merge``
(default 0: torch's thread count): dense merges use them as intra-op threads, factor-space merges of
LoRAs merge that many matrices at once with one intra-op thread each. ``--threads 1`` is the
one-core figure (and the fastest on a busy shared CPU, where busy-waiting threads collapse).

``--whole-process`` adds a column: the wall-clock seconds of the CLI, ``merge-bench merge --method M
--format peft`` (``delta`` for dense methods) on the same adapters, run as a fresh subprocess, so
Python and library start-up count too (what a user waits for).

A naive dense baseline (STAR the textbook way: dense τ_t = s·B·A, full SVD per matrix, truncate,
renormalize, average) runs on ``--naive-layers`` layers and ``--naive-tasks`` tasks and is scaled
linearly to all layers and tasks; the table shows its ratio to the engine's ``star``.

    nice -n 10 .venv/bin/python scripts/bench_merge.py [--layers 32] [--n 12] [--methods a,b,ties+svc]
        [--devices cpu,cuda] [--whole-process] [--json results.json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {"q_proj": (4096, 4096), "k_proj": (1024, 4096), "v_proj": (1024, 4096)}  # out × in
TARGET_FACTOR_S = 2.0
TARGET_DENSE_S = 300.0
TARGET_RSS_MB = 6 * 1024


def build_adapters(root: Path, n: int, layers: int, rank: int, dtype_name: str) -> list[Path]:
    """N PEFT LoRA dirs with seeded random factors (A ~ N(0, 1/in), B ~ N(0, 0.02²)), alpha = 2r."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    dtype = getattr(torch, dtype_name)
    paths = []
    for t in range(n):
        path = root / f"task{t:02d}"
        paths.append(path)
        if (path / "adapter_model.safetensors").is_file():
            continue
        gen = torch.Generator().manual_seed(1000 + t)
        tensors = {}
        for layer in range(layers):
            for module, (out_f, in_f) in SHAPES.items():
                prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
                tensors[f"{prefix}.lora_A.weight"] = (torch.randn(rank, in_f, generator=gen) / in_f**0.5).to(dtype)
                tensors[f"{prefix}.lora_B.weight"] = (torch.randn(out_f, rank, generator=gen) * 0.02).to(dtype)
        path.mkdir(parents=True, exist_ok=True)
        save_file(tensors, path / "adapter_model.safetensors", metadata={"format": "pt"})
        LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(SHAPES), task_type="CAUSAL_LM",
                   base_model_name_or_path="mistralai/Mistral-7B-Instruct-v0.2").save_pretrained(str(path))
    return paths


def worker(args: argparse.Namespace) -> dict:
    """One method on one device in this (fresh) process; prints a JSON line."""
    import peft  # noqa: F401  (imported before timing: start-up cost, not merge cost)
    import torch
    import transformers  # noqa: F401

    import merge_bench
    from merge_bench.merging.methods import get_method

    cls = get_method(args.method)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = Path(args.workdir) / "out" / f"{args.method}-{args.device}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = merge_bench.merge(args.method, [str(p) for p in sorted(Path(args.workdir, "adapters").iterdir())],
                               out=out, format="peft" if cls.lowrank else "delta", device=args.device,
                               dtype=args.dtype, threads=args.threads or None)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    row = {
        "method": args.method, "space": "factor" if cls.lowrank else "dense", "device": args.device,
        "seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_imports_mb": rss_before, "format": result.output.format, "rank": result.output.rank,
        "output_mb": result.output.size_bytes / 2**20,
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else None,
    }
    shutil.rmtree(out, ignore_errors=True)
    return row


def naive_worker(args: argparse.Namespace) -> dict:
    """STAR without factor space, on a slice of the problem, scaled linearly to the whole."""
    import torch
    from safetensors import safe_open

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    adapters = sorted(Path(args.workdir, "adapters").iterdir())[: args.naive_tasks]
    scale = 2.0  # alpha / r of the built adapters
    start = time.perf_counter()
    for layer in range(args.naive_layers):
        for module in SHAPES:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            merged = None
            for path in adapters:
                with safe_open(path / "adapter_model.safetensors", "pt") as f:
                    A = f.get_tensor(f"{prefix}.lora_A.weight").to(device, torch.float32)
                    B = f.get_tensor(f"{prefix}.lora_B.weight").to(device, torch.float32)
                tau = scale * B @ A
                U, S, Vh = torch.linalg.svd(tau, full_matrices=False)
                csum = torch.cumsum(S, 0)
                r = int((csum < 0.4 * csum[-1]).sum()) + 1
                S_kept = S[:r] * (csum[-1] / csum[r - 1])
                star = (U[:, :r] * S_kept) @ Vh[:r]
                merged = star if merged is None else merged + star
            (merged / len(adapters)).cpu()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    factor = (args.layers / args.naive_layers) * (args.n / len(adapters))
    return {"method": "naive dense STAR", "space": "dense", "device": args.device, "seconds": seconds * factor,
            "measured_seconds": seconds, "scaled_by": factor,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def merge_cli() -> list[str]:
    """The ``merge-bench`` command of this interpreter's environment (else ``python -m merge_bench.cli``)."""
    script = Path(sys.executable).with_name("merge-bench")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "merge_bench.cli"]


def whole_process(method: str, lowrank: bool, device: str, workdir: Path, args: argparse.Namespace) -> dict:
    """Seconds of ``merge-bench merge`` as a fresh process, start-up to exit, on the benchmark's adapters."""
    out = workdir / "out" / f"{method}-{device}-cli"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [*merge_cli(), "merge", "--method", method, "--format", "peft" if lowrank else "delta",
           "--adapters", *map(str, sorted((workdir / "adapters").iterdir())), "--out", str(out),
           "--device", device, "--dtype", args.dtype, *(["--threads", str(args.threads)] if args.threads else [])]
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"whole_process_error": f"timed out after {args.timeout:.0f} s"}
    seconds = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        return {"whole_process_error": " | ".join(proc.stderr.strip().splitlines()[-3:]) or f"exit {proc.returncode}"}
    return {"whole_process_s": seconds}


def run_worker(script_args: list[str], timeout: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *script_args]
    # Busy-waiting OpenMP threads collapse on a shared, oversubscribed CPU (measured: 10× slower
    # with 2 threads under load); passive waiting costs nothing measurable on an idle machine.
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail) or f"exit {proc.returncode}"}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--n", type=int, default=12, help="number of adapters (tasks)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--methods", default="all", help="comma-separated method names, or all registered")
    parser.add_argument("--devices", default=None, help="comma-separated; default cpu, plus cuda when available")
    parser.add_argument("--dtype", default="bfloat16", help="stored dtype of the outputs (maths are float32)")
    parser.add_argument("--adapter-dtype", default="bfloat16", help="dtype of the generated adapter files")
    parser.add_argument("--naive-layers", type=int, default=1, help="layers the naive baseline runs on (0: skip)")
    parser.add_argument("--naive-tasks", type=int, default=None,
                        help="tasks the naive baseline runs on (default: 1 on cpu, all on cuda)")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads per method (default 0: torch's count; 1 = one core)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per method")
    parser.add_argument("--workdir", default=None, help="where adapters and outputs go (default: a temp dir)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    parser.add_argument("--whole-process", action="store_true",
                        help="also time each method as the CLI (merge-bench merge) in a fresh process, start-up included")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--naive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if args.worker:
        print(json.dumps(naive_worker(args) if args.naive else worker(args)))
        return 0

    import torch

    from merge_bench.merging.methods import available_methods, get_method

    registry = available_methods()
    methods = sorted(registry) if args.methods == "all" else [m.strip() for m in args.methods.split(",")]
    try:  # registered names and their <method>+svc variants
        registry = {m: get_method(m) for m in methods}
    except ValueError as err:
        parser.error(str(err))
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_merge_"))
    try:
        t0 = time.perf_counter()
        build_adapters(workdir / "adapters", args.n, args.layers, args.rank, args.adapter_dtype)
        print(f"{args.n} adapters, {args.layers} layers × q/k/v, rank {args.rank} in {workdir} "
              f"({time.perf_counter() - t0:.1f} s to build)", flush=True)
        common = ["--worker", "--workdir", str(workdir), "--layers", str(args.layers), "--n", str(args.n),
                  "--dtype", args.dtype, "--threads", str(args.threads)]
        rows = []
        for device in devices:
            for method in methods:
                row = run_worker([*common, "--method", method, "--device", device], args.timeout)
                row = {"method": method, "device": device, **row}
                if args.whole_process:
                    row.update(whole_process(method, registry[method].lowrank, device, workdir, args))
                rows.append(row)
                print(json.dumps(row), flush=True)
            if args.naive_layers > 0:
                tasks = args.naive_tasks or (args.n if device.startswith("cuda") else 1)
                row = run_worker([*common, "--naive", "--device", device, "--naive-layers", str(args.naive_layers),
                                  "--naive-tasks", str(tasks)], args.timeout)
                rows.append({"method": "naive dense STAR", "device": device, **row})
                print(json.dumps(rows[-1]), flush=True)
        print(render(rows, args))
        if args.json:
            Path(args.json).write_text(json.dumps({"config": vars(args), "rows": rows}, indent=2) + "\n")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def render(rows: list[dict], args: argparse.Namespace) -> str:
    from tabulate import tabulate

    star = {r["device"]: r["seconds"] for r in rows if r.get("method") == "star" and "seconds" in r}
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["method"], r.get("space", ""), r["device"], "error: " + r["error"][:80], "", "", "", "", ""])
            continue
        limit = TARGET_FACTOR_S if r["space"] == "factor" else TARGET_DENSE_S
        naive = r["method"].startswith("naive")
        ok = "" if naive or r["device"] != "cpu" else (
            "yes" if r["seconds"] <= limit and r["peak_rss_mb"] <= TARGET_RSS_MB else "NO")
        if naive:
            note = f"scaled ×{r['scaled_by']:.0f} from {r['measured_seconds']:.1f} s"
            if r["device"] in star:
                note = f"{r['seconds'] / star[r['device']]:.0f}× star ({note})"
        else:
            note = r["format"] + (f" r={r['rank']}" if r.get("rank") else "")
        whole = f"{r['whole_process_s']:.2f}" if "whole_process_s" in r else r.get("whole_process_error", "")[:60]
        table.append([r["method"], r["space"], r["device"], f"{r['seconds']:.2f}", whole, f"{r['peak_rss_mb']:.0f}",
                      "" if r.get("output_mb") is None else f"{r['output_mb']:.0f}", note, ok])
    header = (f"{args.n} adapters × {args.layers} layers × q/k/v (Mistral-7B shapes), rank {args.rank}; "
              f"threads {args.threads or 'default'}; time includes reading, merging and writing"
              + ("; whole process: the merge-bench merge CLI from start-up to exit" if args.whole_process else ""))
    headers = ["method", "space", "device", "seconds", "whole process s", "peak RSS MB", "output MB",
               "output / note", "CPU target met"]
    if not args.whole_process:
        headers.pop(4)
        table = [row[:4] + row[5:] for row in table]
    return header + "\n" + tabulate(table, headers=headers)


if __name__ == "__main__":
    sys.exit(main())
