"""Files: checkpoint directories (local or hub), content hashes, atomic writes, the cache root.

Torch-free, so the CLI and the backbone registry can use it without loading torch.

Decisions where the spec was silent:
- A directory is hashed over the files a loader reads (config + weights), not every file in it, so a
  README edit does not change an input's identity: sha256 of ``"<relpath>\\t<sha256>\\n"`` lines, sorted.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
# What a hub snapshot needs for merging: configs, weights and the tokenizer files a full checkpoint copies.
# (Not "*.safetensors": some repos also hold a second, consolidated copy of the weights.)
HUB_PATTERNS = ["*.json", "model*.safetensors", "adapter_model.safetensors", "*.model", "*.txt", "*.jinja",
                "*.tiktoken"]
HUB_PICKLED = ["pytorch_model*.bin", "adapter_model.bin"]

def resolve_dir(spec: str | os.PathLike, what: str = "model") -> Path:
    """A local directory, or a hub id (``org/name`` or ``org/name@revision``) fetched with
    ``huggingface_hub.snapshot_download`` (honours HF_HUB_OFFLINE and the local cache)."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{what} {path} is a file; expected a directory")
        return path
    text = str(spec)
    if not HUB_ID.match(text):
        raise FileNotFoundError(f"{what} {text} does not exist (expected a local directory or a hub id org/name)")
    from huggingface_hub import snapshot_download

    repo_id, _, revision = text.partition("@")
    try:
        local = Path(snapshot_download(repo_id, revision=revision or None, allow_patterns=HUB_PATTERNS))
        if not any(local.glob("*.safetensors")):  # an older repo that only has pickled weights
            local = Path(snapshot_download(repo_id, revision=revision or None,
                                           allow_patterns=HUB_PATTERNS + HUB_PICKLED))
    except Exception as err:  # hub errors have many types; all mean "cannot get it"
        raise FileNotFoundError(
            f"{what} {text} is not a local directory and could not be fetched from the Hugging Face hub: {err}"
        ) from None
    return local


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(root: Path, files: list[Path]) -> tuple[str, dict[str, str]]:
    """(stable hash of the set, per-file hashes keyed by path relative to root).

    Paths are taken lexically (a hub snapshot's files are symlinks into its blob store)."""
    per_file = {}
    for f in map(Path, files):
        name = f.relative_to(root).as_posix() if f.is_relative_to(root) else f.name
        per_file[name] = sha256_file(f)
    lines = "".join(f"{name}\t{per_file[name]}\n" for name in sorted(per_file))
    return hashlib.sha256(lines.encode()).hexdigest(), dict(sorted(per_file.items()))


@contextmanager
def atomic_dir(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp dir beside ``out``; on success it becomes ``out`` (replacing it when
    ``overwrite``), on any failure (KeyboardInterrupt included) it is removed."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise ValueError(f"output {out} already exists; pass --overwrite (overwrite=True) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            out.rename(old)
            tmp.rename(out)
            _remove(old)
        else:
            tmp.rename(out)
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file beside ``path``, fsync, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def resource_dir(name: str) -> Path:
    """A top-level folder the package ships (``tasks``, ``adapters``): the repository's own in a source
    checkout (or an editable install), else the copy a built wheel carries in ``merge_bench/_data/``
    (``setup.py`` maps them there, so the design keeps them at the top of the repository)."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package.parent / name, package / "_data" / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"merge-bench's {name}/ folder is missing: looked in {package.parent / name} (a source "
                            f"checkout) and {package / '_data' / name} (an installed wheel); reinstall merge-bench")


def cache_root() -> Path:
    """``$MERGE_BENCH_CACHE``, default ``~/.cache/merge-bench``: converted models, results, micro builds."""
    return Path(os.environ.get("MERGE_BENCH_CACHE", Path.home() / ".cache" / "merge-bench"))


def prompts_sha256(prompts: Sequence[str]) -> str:
    """sha256 of a list of texts (calibration prompts), NUL-separated, in order."""
    return hashlib.sha256("\x00".join(prompts).encode("utf-8")).hexdigest()


def content_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# Files that describe a local copy rather than the model: the tiny base's conversion manifest
# records file mtimes, so hashing it would give every machine (and every re-verification) its own
# "base", and their leaderboard entries could never share reference rows.
LOCAL_FILES = frozenset({"merge_bench_manifest.json"})


# Keys that name the library version which wrote a config file, not the model: transformers stamps
# ``transformers_version`` into config.json and generation_config.json when it saves, so the same weights and
# tokenizer converted under 5.24 and 5.25 would otherwise be two "bases" whose results never share a cache
# entry or a leaderboard folder.
WRITER_KEYS = frozenset({"transformers_version"})


def _model_file_sha256(path: Path) -> str:
    if path.name in ("config.json", "generation_config.json"):
        config = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(config, dict) and WRITER_KEYS & set(config):
            return content_hash({k: v for k, v in config.items() if k not in WRITER_KEYS})
    return sha256_file(path)


def dir_sha256(path: Path, patterns: tuple[str, ...] = ("*.safetensors", "*.bin", "*.json")) -> str:
    """A stable hash over a model or adapter directory's weight and config files (content only; a config's
    ``WRITER_KEYS`` left out)."""
    path = Path(path)
    files = sorted({p for pat in patterns for p in path.glob(pat) if p.is_file() and p.name not in LOCAL_FILES})
    if not files:
        raise FileNotFoundError(f"{path} holds no model files (looked for {', '.join(patterns)})")
    return content_hash({p.name: _model_file_sha256(p) for p in files})


def write_json_atomic(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
