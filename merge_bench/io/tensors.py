"""Tensors on disk: lazy tensor stores over safetensors or pickled checkpoints, finiteness checks,
and a streaming safetensors writer.

Tensors are read one at a time and a safetensors file is opened per read, so its memory map is
released right after: streaming a 7B checkpoint never keeps the whole file resident.
"""
from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

# safetensors dtype codes (the format's spec), for the streaming writer and header-only shape reads.
ST_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}
ST_CODES = {code: dtype for dtype, code in ST_DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    shape: tuple[int, ...]
    dtype: str  # safetensors code (F32, BF16, ...) or str(torch dtype) for .bin files


class TensorStore:
    """The tensors of one checkpoint directory, read lazily by name.

    Safetensors (one file, shards with ``*.safetensors.index.json``, or a named file list) are
    preferred; pickled ``*.bin`` files are read only with ``torch.load(weights_only=True)``.
    """

    def __init__(self, infos: dict[str, TensorInfo], bin_state: dict[str, dict[str, Tensor]] | None = None):
        self.infos = infos
        self._bin = bin_state or {}

    @classmethod
    def open(cls, directory: Path, stem: str = "model") -> "TensorStore":
        """Open the weights in ``directory``: ``<stem>.safetensors.index.json``, ``<stem>.safetensors``,
        ``<stem>-*.safetensors``; else the same for ``pytorch_<stem>.bin``."""
        files = _weight_files(directory, stem)
        if files and files[0].suffix == ".safetensors":
            return cls.from_safetensors(files)
        if files:
            return cls.from_bin(files)
        raise FileNotFoundError(
            f"{directory}: no weights found (expected {stem}.safetensors, sharded {stem}-*.safetensors with "
            f"{stem}.safetensors.index.json, or pytorch_{stem}.bin)"
        )

    @classmethod
    def from_safetensors(cls, files: list[Path]) -> "TensorStore":
        infos: dict[str, TensorInfo] = {}
        for file in files:
            for name, (shape, dtype) in read_safetensors_header(file).items():
                if name in infos:
                    raise ValueError(f"{file}: tensor {name!r} also appears in {infos[name].file}")
                infos[name] = TensorInfo(file, shape, dtype)
        return cls(infos)

    @classmethod
    def from_bin(cls, files: list[Path]) -> "TensorStore":
        infos: dict[str, TensorInfo] = {}
        state: dict[str, dict[str, Tensor]] = {}
        for file in files:
            sd = load_bin(file)
            state[str(file)] = sd
            for name, t in sd.items():
                infos[name] = TensorInfo(file, tuple(t.shape), str(t.dtype))
        return cls(infos, state)

    @property
    def files(self) -> list[Path]:
        return sorted({info.file for info in self.infos.values()})

    def keys(self) -> list[str]:
        return list(self.infos)

    def __contains__(self, name: str) -> bool:
        return name in self.infos

    def shape(self, name: str) -> tuple[int, ...]:
        return self.infos[name].shape

    def get(self, name: str) -> Tensor:
        info = self.infos[name]
        if str(info.file) in self._bin:
            return self._bin[str(info.file)][name]
        from safetensors import safe_open

        try:
            with safe_open(info.file, framework="pt") as handle:
                return handle.get_tensor(name)
        except Exception as err:
            raise ValueError(f"{info.file}: cannot read tensor {name!r}: {err}") from None


def _weight_files(directory: Path, stem: str) -> list[Path]:
    for suffix, prefix in ((".safetensors", ""), (".bin", "pytorch_" if stem == "model" else "")):
        single = directory / f"{prefix}{stem}{suffix}"
        index = directory / f"{prefix}{stem}{suffix}.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(f"{index}: not a valid shard index ({err})") from None
            files = [directory / name for name in sorted(set(weight_map.values()))]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise FileNotFoundError(f"{index} lists shards that do not exist: {', '.join(missing)}")
            return files
        if single.is_file():
            return [single]
        shards = sorted(directory.glob(f"{prefix}{stem}-*{suffix}"))
        if shards:
            return shards
    return []


def read_safetensors_header(file: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Names → (shape, dtype code), from the header only. A truncated or corrupt file is a ValueError."""
    from safetensors import safe_open

    try:
        with safe_open(file, framework="pt") as handle:
            out = {}
            for name in handle.keys():
                sl = handle.get_slice(name)
                out[name] = (tuple(sl.get_shape()), sl.get_dtype())
            return out
    except Exception as err:
        raise ValueError(f"{file}: not a readable safetensors file (truncated or corrupt?): {err}") from None


def load_bin(file: Path) -> dict[str, Tensor]:
    """A pickled state dict, through torch's restricted unpickler only (weights_only=True)."""
    try:
        try:
            sd = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            sd = torch.load(file, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as err:
        raise ValueError(f"{file}: cannot load as a weights-only PyTorch state dict: {err}") from None
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ValueError(f"{file}: expected a dict of tensors")
    return sd


def all_finite(t: Tensor) -> bool:
    """Whether every element is finite. Fast path: a finite sum proves it (one reduction instead of
    an elementwise mask, which dominated loading LoRA files); only a non-finite sum, from a NaN/Inf
    or an overflow of the sum itself, pays for the exact check."""
    if not t.is_floating_point() or math.isfinite(float(t.sum(dtype=torch.float32))):
        return True
    return bool(torch.isfinite(t).all())


def check_mergeable(t: Tensor, file: Path | str, name: str) -> None:
    """A ValueError naming the file and tensor unless ``t`` is a floating-point tensor without NaN/Inf: the
    task-vector maths cannot use integer or boolean weights (a quantized checkpoint or adapter)."""
    if not t.is_floating_point():
        raise ValueError(f"{file}: tensor {name!r} has dtype {str(t.dtype).removeprefix('torch.')}; merging needs "
                         "floating-point weights (float32, bfloat16 or float16), not quantized ones")
    check_finite(t, file, name)


def check_finite(t: Tensor, file: Path | str, name: str) -> None:
    """A ValueError naming the file and tensor when ``t`` holds NaN/Inf."""
    if not all_finite(t):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{file}: tensor {name!r} has {bad} NaN/Inf values")


class SafetensorsStreamWriter:
    """Write a safetensors file one tensor at a time, in a planned order.

    The safetensors library only serializes a complete dict, which would hold a whole shard in
    memory; the format is a JSON header with every tensor's offsets, then raw little-endian bytes,
    so once names, dtypes and shapes are known the header can be written first and each tensor
    appended as it is produced and then freed.
    """

    def __init__(self, path: Path, entries: list[tuple[str, torch.dtype, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None):
        self.path = Path(path)
        self._entries = entries
        header: dict[str, object] = {"__metadata__": {"format": "pt", **(metadata or {})}}
        offset = 0
        for name, dtype, shape in entries:
            size = tensor_nbytes(dtype, shape)
            header[name] = {"dtype": ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the reference writer aligns the data start to 8 bytes
        self._digest = hashlib.sha256()
        self._handle = open(self.path, "wb")
        self._emit(struct.pack("<Q", len(raw)))
        self._emit(raw)
        self._next = 0

    def _emit(self, data) -> None:
        self._handle.write(data)
        self._digest.update(data)

    @property
    def sha256(self) -> str:
        """Hash of the bytes written so far (the whole file once closed), computed while writing."""
        return self._digest.hexdigest()

    def __enter__(self) -> "SafetensorsStreamWriter":
        return self

    def __exit__(self, exc_type, *rest) -> None:
        if exc_type is None:
            self.close()
        else:
            self._handle.close()

    def write(self, name: str, tensor: Tensor) -> None:
        expected, dtype, shape = self._entries[self._next]
        if name != expected or tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
            raise ValueError(
                f"{self.path}: expected tensor {expected} {dtype} {tuple(shape)} next, "
                f"got {name} {tensor.dtype} {tuple(tensor.shape)}"
            )
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        self._emit(memoryview(data))
        self._next += 1

    def close(self) -> None:
        self._handle.close()
        if self._next != len(self._entries):
            raise ValueError(f"{self.path}: wrote {self._next} of {len(self._entries)} planned tensors")


def tensor_nbytes(dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count * torch.empty((), dtype=dtype).element_size()
