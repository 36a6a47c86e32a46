"""Inputs as per-matrix task vectors: PEFT LoRA adapters, full fine-tuned checkpoints, the base model,
and the validation that ties them together (``plan``).

Every task vector is keyed by the base model's parameter name (``<module>.weight``) and comes out in
float32 on the CPU: ``LowRank(s·B, A)`` for a LoRA module, a dense ``θ_ft − θ_0`` for a full checkpoint.

Decisions where the spec was silent:
- LoRA tensors are small, so an adapter is read and checked (shapes, ranks, NaN/Inf) whole when
  opened; a full checkpoint is read one tensor per request and checked then.
- ``fan_in_fan_out`` (GPT-2 Conv1D layout, weight stored in × out) is honoured from the adapter's
  config: its task vector is the transpose (s·B·A)ᵀ = (s·Aᵀ)·Bᵀ, kept low-rank.
- ``targets`` also restricts LoRA inputs (logged), so one option means "merge only these modules".
- Keys are visited in natural order (layers.2 before layers.10): fixed, and readable in progress logs.
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch
from torch import Tensor

from .delta import Delta, LowRank
from ..io.files import resolve_dir
from ..io.tensors import TensorStore, check_mergeable, load_bin, read_safetensors_header
from .numerics import COMPUTE_DTYPE

log = logging.getLogger(__name__)

LORA_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+?)\.lora_(?P<which>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$"
)

# LoraConfig options that change the forward pass beyond W + s·B·A: merging them as plain LoRA would be wrong.
UNSUPPORTED_OPTIONS = {
    "use_dora": "DoRA (weight-decomposed LoRA)",
    "use_qalora": "QA-LoRA",
    "lora_bias": "LoRA bias terms",
    "layer_replication": "layer replication",
    "alora_invocation_tokens": "activated LoRA (aLoRA)",
    "target_parameters": "LoRA on nn.Parameter targets",
    "trainable_token_indices": "trainable token embeddings",
    "modules_to_save": "modules_to_save (fully trained replacement modules)",
    "arrow_config": "Arrow routing",
    "use_bdlora": "block-diagonal LoRA",
    "velora_config": "VeLoRA",
    "monteclora_config": "MonteCLoRA",
    "kasa_config": "KaSA",
}


def read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def module_of(key: str) -> str:
    return key[: -len(".weight")] if key.endswith(".weight") else key


def matches_targets(key: str, targets: list[str] | None) -> bool:
    """PEFT's list semantics: a module matches a target equal to its name or to a dotted suffix of it."""
    if not targets:
        return True
    module = module_of(key)
    return any(module == t or module.endswith("." + t) for t in targets)


def pattern_value(patterns: dict, module: str, default):
    """PEFT's rank_pattern/alpha_pattern lookup: the first key K (a regex) with ``(.*\\.)?(K)$``
    matching the module name wins; no match gives the config-wide default."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


class BaseModel:
    """A base model directory (or hub id): config and tensor headers read eagerly, tensors lazily."""

    def __init__(self, spec: Union[str, Path]):
        self.spec = str(spec)
        self.path = resolve_dir(spec, "base model")
        config = self.path / "config.json"
        if not config.is_file():
            raise FileNotFoundError(f"base model {self.path}: no config.json (expected a Hugging Face model directory)")
        self.config = read_json(config)
        self.store = TensorStore.open(self.path)

    def file_key(self, name: str) -> str | None:
        """The checkpoint's key for a model parameter name; tolerates a checkpoint saved without
        the model's base prefix (old GPT-2 files say ``h.0...`` for ``transformer.h.0...``)."""
        if name in self.store:
            return name
        _, _, rest = name.partition(".")
        return rest if rest and rest in self.store else None

    def shape(self, name: str) -> tuple[int, ...] | None:
        key = self.file_key(name)
        return None if key is None else self.store.shape(key)

    def get(self, name: str) -> Tensor:
        key = self.file_key(name)
        if key is None:
            raise ValueError(f"base model {self.path} has no parameter {name!r}")
        tensor = self.store.get(key)
        check_mergeable(tensor, self.store.infos[key].file, key)
        return tensor


class LoraAdapter:
    """A PEFT LoRA directory: adapter_config.json + adapter_model.safetensors (or .bin)."""

    kind = "lora"

    def __init__(self, spec: Union[str, Path]):
        self.spec = str(spec)
        self.path = resolve_dir(spec, "adapter")
        self.config_file = self.path / "adapter_config.json"
        self.config = read_json(self.config_file)
        self._check_config()
        self.weights_file = self._weights_file()
        self.fan_in_fan_out = bool(self.config.get("fan_in_fan_out", False))
        self._factors: dict[str, tuple[Tensor, Tensor, float]] = {}
        self.shapes: dict[str, tuple[int, int]] = {}
        self.ranks: dict[str, int] = {}
        self._read()

    @property
    def files(self) -> list[Path]:
        return [self.config_file, self.weights_file]

    @property
    def name(self) -> str:
        return self.path.name

    def _check_config(self) -> None:
        peft_type = str(self.config.get("peft_type", "LORA")).upper()
        if peft_type != "LORA":
            raise ValueError(f"adapter {self.path}: PEFT type {peft_type} is not supported; "
                             "only LoRA adapters can be merged")
        for option, what in UNSUPPORTED_OPTIONS.items():
            if self.config.get(option):
                raise ValueError(
                    f"adapter {self.path}: uses {what} ({option}={self.config[option]!r} in adapter_config.json), "
                    "which merge-bench does not support: only plain LoRA (W + s·B·A) can be merged"
                )
        init = self.config.get("init_lora_weights")
        if isinstance(init, str) and init.lower().startswith(("pissa", "olora", "corda", "loftq")):
            raise ValueError(
                f"adapter {self.path}: initialised with {init!r}, which also changes the base weights; convert it "
                "to a plain LoRA first (PEFT's save_pretrained(path_initial_model_for_weight_conversion=...))"
            )
        if self.config.get("bias", "none") != "none":
            raise ValueError(f"adapter {self.path}: trains biases (bias={self.config['bias']!r}); "
                             "only bias='none' is supported")

    def _weights_file(self) -> Path:
        for name in ("adapter_model.safetensors", "adapter_model.bin"):
            if (self.path / name).is_file():
                return self.path / name
        raise FileNotFoundError(f"adapter {self.path}: no adapter_model.safetensors (or adapter_model.bin)")

    def _load_tensors(self) -> dict[str, Tensor]:
        if self.weights_file.suffix == ".bin":
            return load_bin(self.weights_file)
        read_safetensors_header(self.weights_file)  # a clear error for truncated files
        from safetensors.torch import load_file

        try:
            return load_file(self.weights_file)
        except Exception as err:
            raise ValueError(f"{self.weights_file}: not a readable safetensors file: {err}") from None

    def _read(self) -> None:
        parts: dict[str, dict[str, Tensor]] = {}
        adapter_names = set()
        for name, tensor in self._load_tensors().items():
            match = LORA_KEY.match(name)
            if match is None:
                raise ValueError(f"{self.weights_file}: unexpected tensor {name!r}: {_unexpected_reason(name)}")
            adapter_names.add(match["adapter"])
            if tensor.ndim != 2:
                raise ValueError(f"{self.weights_file}: {name} has shape {tuple(tensor.shape)}; only Linear "
                                 "(2-D) LoRA factors are supported")
            check_mergeable(tensor, self.weights_file, name)
            parts.setdefault(match["module"], {})[match["which"]] = tensor
        if len(adapter_names) > 1:
            raise ValueError(f"{self.weights_file}: holds several adapters {sorted(map(str, adapter_names))}; "
                             "expected one")
        if not parts:
            raise ValueError(f"{self.weights_file}: no LoRA tensors (lora_A/lora_B) found")
        r_default, alpha_default = self.config.get("r", 8), self.config.get("lora_alpha", 8)
        rank_pattern = self.config.get("rank_pattern") or {}
        alpha_pattern = self.config.get("alpha_pattern") or {}
        for module, ab in parts.items():
            if set(ab) != {"A", "B"}:
                raise ValueError(f"{self.weights_file}: module {module} has lora_{''.join(ab)} "
                                 "but not both lora_A and lora_B")
            A, B = ab["A"], ab["B"]
            r = pattern_value(rank_pattern, module, r_default)
            alpha = pattern_value(alpha_pattern, module, alpha_default)
            if A.shape[0] != B.shape[1] or A.shape[0] != r:
                raise ValueError(f"{self.weights_file}: module {module}: lora_A {tuple(A.shape)} and lora_B "
                                 f"{tuple(B.shape)} do not have the configured rank r={r}")
            scale = alpha / math.sqrt(r) if self.config.get("use_rslora") else alpha / r
            key = f"{module}.weight"
            self._factors[key] = (A, B, float(scale))
            self.ranks[key] = r
            self.shapes[key] = (A.shape[1], B.shape[0]) if self.fan_in_fan_out else (B.shape[0], A.shape[1])

    def restrict(self, targets: list[str] | None) -> None:
        # what the adapter targets before --targets narrows it (named when a target matches nothing)
        self.targeted = sorted({module_of(k).rsplit(".", 1)[-1] for k in self.shapes})
        dropped = [k for k in self.shapes if not matches_targets(k, targets)]
        if dropped:
            log.warning("adapter %s: %d modules outside --targets are not merged (e.g. %s)",
                        self.path, len(dropped), module_of(dropped[0]))
        for key in dropped:
            del self.shapes[key], self._factors[key], self.ranks[key]

    def delta(self, key: str) -> LowRank:
        A, B, scale = self._factors[key]
        A, B = A.to(COMPUTE_DTYPE), B.to(COMPUTE_DTYPE, copy=True)
        if self.fan_in_fan_out:  # the weight is stored in × out: Δ = (s·B·A)ᵀ = (s·Aᵀ)·Bᵀ
            return LowRank((A.T * scale).contiguous(), B.T.contiguous())
        return LowRank(B.mul_(scale), A)

    def zero(self, shape: tuple[int, int]) -> LowRank:
        return LowRank.zeros(*shape)


def _unexpected_reason(name: str) -> str:
    if "lora_embedding" in name:
        return "LoRA on embedding layers is not supported (only Linear modules)"
    if "lora_magnitude_vector" in name:
        return "DoRA magnitude vectors are not supported"
    if "modules_to_save" in name:
        return "modules_to_save weights (full replacement modules) are not supported"
    return "expected only '<module>.lora_A.weight' / '<module>.lora_B.weight' tensors of a plain LoRA adapter"


class FullCheckpoint:
    """A full fine-tuned HF checkpoint: task vector θ_ft − θ_0 per targeted 2-D weight, one at a time."""

    kind = "full"

    def __init__(self, spec: Union[str, Path], base: BaseModel | None, targets: list[str] | None):
        self.spec = str(spec)
        self.path = resolve_dir(spec, "checkpoint")
        if base is None:
            raise ValueError(f"{self.path} is a full checkpoint: its task vector θ_ft − θ_0 needs the base model "
                             "(--base)")
        self.base = base
        self.store = TensorStore.open(self.path)
        self.fan_in_fan_out = False
        self.shapes: dict[str, tuple[int, int]] = {}
        candidates = [k for k, info in self.store.infos.items()
                      if len(info.shape) == 2 and k.endswith(".weight") and matches_targets(k, targets)]
        for key in candidates:
            if base.file_key(key) is None:
                if targets:
                    raise ValueError(f"checkpoint {self.path}: targeted weight {key} has no counterpart "
                                     f"in base {base.path}")
                log.info("checkpoint %s: %s is not in the base (a tied alias?); skipped", self.path, key)
                continue
            self.shapes[key] = self.store.shape(key)  # type: ignore[assignment]
        if targets is None:
            self._keep_changed()
        if not self.shapes:
            what = f"matching targets {targets}" if targets else "that differs from the base"
            raise ValueError(f"checkpoint {self.path}: no 2-D weight {what}")

    @property
    def files(self) -> list[Path]:
        config = self.path / "config.json"
        return [config, *self.store.files] if config.is_file() else self.store.files

    @property
    def name(self) -> str:
        return self.path.name

    def _keep_changed(self) -> None:
        """Without targets, the task vector covers the 2-D weights that differ from the base (one pass)."""
        for key in list(self.shapes):
            if self.base.shape(key) != self.shapes[key]:
                continue  # reported by the plan's shape check, with both shapes
            if torch.equal(self.store.get(key).to(COMPUTE_DTYPE), self.base.get(key).to(COMPUTE_DTYPE)):
                del self.shapes[key]

    def restrict(self, targets: list[str] | None) -> None:
        pass  # targets were applied when the checkpoint was opened

    def delta(self, key: str) -> Tensor:
        tuned = self.store.get(key)
        check_mergeable(tuned, self.store.infos[key].file, key)
        return tuned.to(COMPUTE_DTYPE) - self.base.get(key).to(COMPUTE_DTYPE)

    def zero(self, shape: tuple[int, int]) -> Tensor:
        return torch.zeros(shape, dtype=COMPUTE_DTYPE)


TaskInput = Union[LoraAdapter, FullCheckpoint]


def open_input(spec: Union[str, Path], base: BaseModel | None, targets: list[str] | None) -> TaskInput:
    """A LoRA directory (adapter_config.json) or a full checkpoint (config.json + weights)."""
    path = resolve_dir(spec, "adapter")
    if (path / "adapter_config.json").is_file():
        adapter = LoraAdapter(path)
        adapter.spec = str(spec)
        adapter.restrict(targets)
        return adapter
    if (path / "config.json").is_file():
        checkpoint = FullCheckpoint(path, base, targets)
        checkpoint.spec = str(spec)
        return checkpoint
    raise FileNotFoundError(
        f"{path}: neither a PEFT LoRA directory (adapter_config.json + adapter_model.safetensors) nor a "
        "full checkpoint (config.json + model safetensors)"
    )


@dataclass
class Plan:
    """What a merge visits: the union of targeted matrices, with their shapes, in a fixed order."""

    inputs: list[TaskInput]
    base: BaseModel | None
    keys: list[str]
    shapes: dict[str, tuple[int, int]]
    fan_in_fan_out: bool

    def delta(self, task: int, key: str) -> Delta:
        """Task ``task``'s vector for ``key``; a zero of the task's kind when it does not target it."""
        source = self.inputs[task]
        return source.delta(key) if key in source.shapes else source.zero(self.shapes[key])


def plan(inputs: list[TaskInput], base: BaseModel | None) -> Plan:
    """Check every input against the base (or, without one, against each other) and take the union."""
    if not inputs:
        raise ValueError("no adapters given; expected at least one")
    shapes: dict[str, tuple[int, int]] = {}
    owner: dict[str, TaskInput] = {}
    for source in inputs:
        for key, shape in source.shapes.items():
            if base is not None:
                expected = base.shape(key)
                if expected is None:
                    raise ValueError(f"input {source.path}: module {module_of(key)} has no parameter {key} "
                                     f"in base {base.path} (is this adapter for another model?)")
                if tuple(expected) != tuple(shape):
                    raise ValueError(f"input {source.path}: module {module_of(key)}: expected shape "
                                     f"{tuple(expected)} (from base {base.path}), got {tuple(shape)}")
            elif key in shapes and shapes[key] != tuple(shape):
                raise ValueError(f"input {source.path}: module {module_of(key)}: expected shape {shapes[key]} "
                                 f"(as in {owner[key].path}), got {tuple(shape)}")
            shapes.setdefault(key, tuple(shape))  # type: ignore[arg-type]
            owner.setdefault(key, source)
    lora_layouts = {s.fan_in_fan_out for s in inputs if s.kind == "lora"}
    if len(lora_layouts) > 1:
        raise ValueError("the LoRA adapters disagree on fan_in_fan_out; they cannot target the same model")
    keys = sorted(shapes, key=natural_key)
    for source in inputs:
        missing = [k for k in keys if k not in source.shapes]
        if missing:
            log.warning("input %s does not target %d of %d merged matrices (e.g. %s): it contributes zero there",
                        source.path, len(missing), len(keys), module_of(missing[0]))
    return Plan(list(inputs), base, keys, shapes, lora_layouts == {True})
