"""Write a MergeResult: a PEFT LoRA adapter, a full HF checkpoint, or the bare deltas; always
atomically, with merge_config.json (provenance and hashes) and a short model card.

Formats:
- ``peft``: one LoRA adapter (only for low-rank results). The rank is padded with zeros to one that
  vLLM serves (8 … 512) and ``lora_alpha = r``, so PEFT's scale is 1 and the merge's scale lives in B.
- ``full``: the base checkpoint with W ← cast(float32(W₀) + Δ), streamed tensor by tensor into
  safetensors shards with an index, plus the base's config, tokenizer and generation files.
- ``delta``: ``delta.safetensors`` holding the dense Δ per parameter name (no base needed).
- ``auto``: ``peft`` when the result is low-rank, else ``full``.

Decisions where the spec was silent: a low-rank module whose rank exceeds min(n, m) is recompressed
exactly (factor-space SVD, float64) before padding; the merged adapter's ``target_modules`` lists the
full module names, so it touches exactly the merged matrices; shards hold at most 5 GB; the ``full``
output of a dtype change updates ``dtype``/``torch_dtype`` in config.json.
"""
from __future__ import annotations

import fnmatch
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import FORMATS
from .adapters import module_of
from .delta import LowRank, dense, from_svd, svd
from .engine import MergeResult
from ..io.files import atomic_dir, sha256_file
from ..io.tensors import ST_CODES, SafetensorsStreamWriter, tensor_nbytes
from .numerics import COMPUTE_DTYPE, DTYPES

log = logging.getLogger(__name__)

VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
MAX_SHARD_BYTES = 5 * 10**9
# Files of the base model that a full checkpoint carries over unchanged (tokenizer, generation, license).
CARRIED_FILES = ("tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt",
                 "*.model", "chat_template.*", "generation_config.json", "preprocessor_config.json",
                 "*.tiktoken", "LICENSE*")


@dataclass
class WriteReport:
    out: Path
    format: str
    files: dict[str, str] = field(default_factory=dict)  # name → sha256
    rank: int | None = None

    @property
    def size_bytes(self) -> int:
        return sum((self.out / name).stat().st_size for name in self.files)


def resolve_format(fmt: str, result: MergeResult) -> str:
    """The concrete format, or a ValueError saying why the requested one cannot be written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {list(FORMATS)}")
    chosen = fmt == "auto"
    if chosen:
        fmt = "peft" if result.is_lowrank else "full"
    if fmt == "peft" and not result.is_lowrank:
        why = "its inputs include full checkpoints" if any(i.kind == "full" for i in result.inputs) \
            else f"method {result.method!r} computes dense deltas"
        raise ValueError(f"--format peft needs a low-rank result, but {why}; use --format full (with --base)")
    if fmt == "full" and result.base_model is None:
        if chosen:
            raise ValueError(f"method {result.method!r} gives a dense result here, which --format auto writes as a "
                             "full checkpoint: that needs the base model (--base); or pass --format delta to write "
                             "only the deltas")
        raise ValueError("--format full writes a whole checkpoint and needs the base model (--base); "
                         "or use --format delta to write only the deltas")
    return fmt


def write(result: MergeResult, out: Path, *, format: str = "auto", overwrite: bool = False,
          progress: bool = False) -> WriteReport:
    """Write ``result`` to ``out`` atomically; nothing is left behind if anything fails."""
    fmt = resolve_format(format, result)
    out = Path(out)
    with atomic_dir(out, overwrite) as tmp:
        report = WriteReport(out, fmt)
        if fmt == "peft":
            report.rank = _write_peft(result, tmp, report)
        elif fmt == "full":
            _write_full(result, tmp, report, progress)
        else:
            _write_delta(result, tmp, report)
        for path in sorted(tmp.iterdir()):
            if path.name not in report.files:
                report.files[path.name] = sha256_file(path)
        report.files = dict(sorted(report.files.items()))
        (tmp / "merge_config.json").write_text(json.dumps(merge_config(result, report), indent=2) + "\n")
        (tmp / "README.md").write_text(model_card(result, report))
    return report


def merge_config(result: MergeResult, report: WriteReport) -> dict[str, Any]:
    dtype_name = next(name for name, d in DTYPES.items() if d == result.numerics.out_dtype)
    return {
        "method": result.method,
        "params": result.config,
        "inputs": [{"path": i.path, "resolved": i.resolved, "kind": i.kind, "sha256": i.sha256, "files": i.files}
                   for i in result.inputs],
        "base": result.base,
        "base_resolved": None if result.base_model is None else str(result.base_model.path),
        "targets": result.targets,
        "format": report.format,
        "dtype": dtype_name,
        "compute": {"dtype": str(COMPUTE_DTYPE).removeprefix("torch."), "device": str(result.numerics.device)},
        "is_lowrank": result.is_lowrank,
        "rank": report.rank,
        "modules": len(result.shapes),
        "versions": result.versions,
        "outputs": report.files,
    }


def model_card(result: MergeResult, report: WriteReport) -> str:
    params = ", ".join(f"{k}={v!r}" for k, v in result.config.items()) or "defaults (none)"
    inputs = "\n".join(f"- `{i.path}` ({i.kind}, sha256 `{i.sha256[:16]}…`)" for i in result.inputs)
    arch = ((result.base_model.config.get("architectures") or ["AutoModel"])[0] if result.base_model else "AutoModel")
    how = {
        "peft": "```python\nfrom peft import PeftModel\n"
                "model = PeftModel.from_pretrained(base_model, \"<this dir>\")\n```",
        "full": f"```python\nfrom transformers import {arch}\nmodel = {arch}.from_pretrained(\"<this dir>\")\n```",
        "delta": "`delta.safetensors` holds Δ per base parameter name: add it to the base weights.",
    }[report.format]
    rank = f", rank {report.rank} (padded)" if report.rank else ""
    return (
        f"# Merged model: {result.method}\n\n"
        f"Made with merge-bench {result.versions.get('merge-bench', '?')}: `{result.method}` ({params}) over "
        f"{len(result.inputs)} inputs, {len(result.shapes)} matrices{rank}; base `{result.base}`; "
        f"format `{report.format}`.\n\nInputs:\n{inputs}\n\nLoad it:\n{how}\n\n"
        "Provenance, parameters and file hashes: `merge_config.json`.\n"
    )


def _padded_rank(max_rank: int) -> int:
    for r in VLLM_RANKS:
        if r >= max_rank:
            return r
    raise ValueError(f"the merged adapter needs rank {max_rank}, above the largest LoRA rank vLLM serves "
                     f"({VLLM_RANKS[-1]}); write it with --format full instead")


def _compact(d: LowRank) -> LowRank:
    """Exactly the same matrix with rank ≤ min(n, m)."""
    if d.rank <= min(d.shape):
        return d
    return from_svd(*svd(d))


def peft_adapter_config(*, r: int, target_modules: list[str], fan_in_fan_out: bool, task_type: str | None,
                        base_model_name_or_path: str | None) -> dict[str, Any]:
    """The merged adapter's ``adapter_config.json``: a plain LoRA with scale lora_alpha / r = 1.

    Written by us rather than by ``peft.LoraConfig.save_pretrained``, because importing peft pulls in
    transformers' model registry (seconds of start-up for ``merge-bench merge``). The keys are the
    ones we set, with the values PEFT writes for them, plus the defaults that decide how a reader
    scales B·A (rslora, DoRA, rank and alpha patterns), so vLLM and merge-bench read it without
    PEFT's defaults; PEFT fills every other field with its default on load, as for its own file
    (``tests/test_writers_peft_config.py`` checks that the loaded LoraConfig equals PEFT's own).
    """
    return {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model_name_or_path,
        "r": r,
        "lora_alpha": r,
        "target_modules": sorted(target_modules),
        "lora_dropout": 0.0,
        "fan_in_fan_out": fan_in_fan_out,
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "rank_pattern": {},
        "alpha_pattern": {},
        "modules_to_save": None,
        "inference_mode": True,
    }


def _write_peft(result: MergeResult, tmp: Path, report: WriteReport) -> int:
    merged: dict[str, LowRank] = {}
    for key, d in result.items():
        if not isinstance(d, LowRank):
            raise ValueError(f"--format peft: the merged delta for {key} is dense; use --format full")
        if not key.endswith(".weight"):
            raise ValueError(f"--format peft: {key} is not a module weight and cannot be a LoRA target")
        merged[key] = d
    result._deltas = merged  # already in memory: keep them readable after writing
    factors = {key: _compact(d) for key, d in merged.items()}
    r = _padded_rank(max(d.rank for d in factors.values()))
    dtype = result.numerics.out_dtype
    entries, padded = [], []
    for key, d in factors.items():
        # PEFT's Δ is s·B·A (out × in); with fan_in_fan_out the weight is in × out and Δ = (s·B·A)ᵀ.
        B, A = (d.A.T, d.B.T) if result.fan_in_fan_out else (d.B, d.A)
        prefix = f"base_model.model.{module_of(key)}"
        entries += [(f"{prefix}.lora_A.weight", dtype, (r, A.shape[1])),
                    (f"{prefix}.lora_B.weight", dtype, (B.shape[0], r))]
        padded.append((A, B))
    # Streamed (one padded matrix at a time, hashed while written) rather than one big dict.
    with SafetensorsStreamWriter(tmp / "adapter_model.safetensors", entries) as writer:
        for (A, B), (name_a, _, _), (name_b, _, _) in zip(padded, entries[::2], entries[1::2]):
            A_pad = torch.zeros(r, A.shape[1], dtype=dtype)
            A_pad[: A.shape[0]] = A
            writer.write(name_a, A_pad)
            B_pad = torch.zeros(B.shape[0], r, dtype=dtype)
            B_pad[:, : B.shape[1]] = B
            writer.write(name_b, B_pad)
    report.files["adapter_model.safetensors"] = writer.sha256
    meta = result.lora_meta
    config = peft_adapter_config(
        r=r, target_modules=[module_of(k) for k in factors], fan_in_fan_out=result.fan_in_fan_out,
        task_type=meta.get("task_type"),
        base_model_name_or_path=result.base if result.base is not None else meta.get("base_model_name_or_path"),
    )
    # As PEFT writes it (sorted keys, indent 2), but with a final newline.
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return r


def _base_dtype(code: str) -> torch.dtype:
    if code in ST_CODES:
        return ST_CODES[code]
    return getattr(torch, code.removeprefix("torch."))  # a .bin store records str(torch dtype)


def merged_weight(base, key: str, delta) -> torch.Tensor:
    """θ_0 + Δ for one matrix in the compute dtype (float32); the caller casts it to the stored dtype."""
    return base.get(key).to(COMPUTE_DTYPE) + dense(delta).to(COMPUTE_DTYPE)


def _write_full(result: MergeResult, tmp: Path, report: WriteReport, progress: bool) -> None:
    base = result.base_model
    assert base is not None  # resolve_format checked it
    if "quantization_config" in base.config:
        raise ValueError(f"base {base.path} is quantized; a full merged checkpoint needs an unquantized base")
    out_dtype = result.numerics.out_dtype
    file_keys = {key: base.file_key(key) for key in result.keys}
    merged = set(file_keys.values())
    order = [file_keys[k] for k in result.keys] + [k for k in base.store.keys() if k not in merged]
    entries = []
    for name in order:
        info = base.store.infos[name]
        dtype = _base_dtype(info.dtype)
        entries.append((name, out_dtype if dtype.is_floating_point else dtype, info.shape))
    shards: list[list[tuple]] = [[]]
    size = 0
    for entry in entries:
        nbytes = tensor_nbytes(entry[1], entry[2])
        if shards[-1] and size + nbytes > MAX_SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += nbytes
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]

    result.bar.on = False  # one bar for the checkpoint: merged matrices and copied base tensors alike
    merged_items = result.items()
    bar = tqdm(total=len(order), disable=not progress, unit="tensor", desc=f"merge {result.method} + write")
    try:
        for shard, name in zip(shards, names):
            with SafetensorsStreamWriter(tmp / name, shard) as writer:
                for key, dtype, _ in shard:
                    if key in merged:
                        merged_key, delta = next(merged_items)
                        assert file_keys[merged_key] == key
                        w = merged_weight(base, key, delta)
                        del delta
                    else:
                        w = base.get(key)
                    writer.write(key, w.to(dtype))
                    bar.update()
                    del w
            report.files[name] = writer.sha256
    finally:
        bar.close()
    index = {"metadata": {"total_size": sum(tensor_nbytes(d, s) for _, d, s in entries)},
             "weight_map": {key: name for shard, name in zip(shards, names) for key, _, _ in shard}}
    (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    config = dict(base.config)
    dtype_name = str(out_dtype).removeprefix("torch.")
    keys = [k for k in ("dtype", "torch_dtype") if k in config] or ["torch_dtype"]
    for k in keys:
        config[k] = dtype_name
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for path in sorted(base.path.iterdir()):
        if path.is_file() and any(fnmatch.fnmatch(path.name, p) for p in CARRIED_FILES):
            shutil.copyfile(path, tmp / path.name)


def _write_delta(result: MergeResult, tmp: Path, report: WriteReport) -> None:
    dtype = result.numerics.out_dtype
    entries = [(key, dtype, shape) for key, shape in result.shapes.items()]
    with SafetensorsStreamWriter(tmp / "delta.safetensors", entries) as writer:
        for key, delta in result.items():
            writer.write(key, dense(delta).to(dtype))
            del delta
    report.files["delta.safetensors"] = writer.sha256
