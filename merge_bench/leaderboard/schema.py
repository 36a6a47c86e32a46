"""The leaderboard entry schema (pydantic), its content hash and its JSON Schema export.

One entry = one (backbone, track, N, method) result on every task draw of its draw set, with the pretrained
and LoRA reference rows of the same run, the per-item files its numbers are recomputed from, and enough
provenance to rerun it. Decisions where the brief was silent:

- ``entry_sha256`` is the sha256 of the canonical JSON (sorted keys, no whitespace, UTF-8) of the
  entry's JSON form without the hash itself. Validation hashes the file's raw JSON, so a change to
  any byte of meaning (a score, a version, a field added by hand) is detected.
- Every model forbids unknown fields: an entry is a published record, and a typo'd field should
  be an error, not silently ignored.
- Scores are finite floats on the 0–100 scale; NaN/inf cannot be written as JSON anyway.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, field_validator, model_validator

# The leaderboard version follows the protocol version (protocol.md): v2 = task draws with bootstrap CIs.
SCHEMA_VERSION = 2
LEADERBOARD_VERSION = "v2"
PROTOCOL_VERSION = 2

_SHA256 = r"^[0-9a-f]{64}$"
Sha256 = Field(pattern=_SHA256)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MethodInfo(_Strict):
    """The method as run. ``source`` says how a reader can get the code again.

    builtin: shipped with merge-bench; entry_point: an installed package (``distribution`` and its
    version); file: a ``path/file.py:Class`` plugin, pinned by the file's sha256.
    """

    name: str = Field(min_length=1)
    key: str = Field(min_length=1)
    params: dict[str, Any]
    source: Literal["builtin", "entry_point", "file"]
    plugin_spec: str | None = None
    plugin_sha256: str | None = Field(default=None, pattern=_SHA256)
    distribution: str | None = None
    distribution_version: str | None = None

    @model_validator(mode="after")
    def _source_fields(self) -> "MethodInfo":
        if self.source == "file" and (self.plugin_spec is None or self.plugin_sha256 is None):
            raise ValueError("a method from a file needs plugin_spec and plugin_sha256")
        if self.source == "entry_point" and self.distribution is None:
            raise ValueError("a method from an entry point needs distribution")
        return self


class MergeBenchInfo(_Strict):
    version: str
    git_commit: str | None


class Versions(_Strict):
    python: str
    torch: str
    transformers: str
    peft: str
    lm_eval: str
    vllm: str | None = None


class Hardware(_Strict):
    platform: str
    cpu: str | None = None
    cpu_count: int | None = None
    gpu: str | None = None


class BackboneInfo(_Strict):
    name: str
    base_id: str
    base_revision: str | None
    base_sha256: str = Sha256


class Artifact(_Strict):
    id: str
    revision: str | None
    sha256: str = Sha256


class TaskInfo(_Strict):
    lm_eval_task: str
    version: str | int | float
    metric: str
    n: int = Field(ge=1)
    sample_ids_sha256: str = Sha256
    yaml_sha256: str | None = Field(default=None, pattern=_SHA256)  # the task config as evaluated


class Provenance(_Strict):
    merge_bench: MergeBenchInfo
    versions: Versions
    hardware: Hardware
    backbone: BackboneInfo
    adapters: dict[str, Artifact]
    tasks: dict[str, TaskInfo]
    backend: str
    device: str
    seed: int
    batch_size: int | None = None  # evaluation batch size; batched generation pads, which can move scores
    date: datetime
    merged_sha256: str | None = Field(default=None, pattern=_SHA256)


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_sha256(data: dict[str, Any]) -> str:
    """sha256 of an entry's JSON form, ignoring any ``entry_sha256`` field in it."""
    rest = {k: v for k, v in data.items() if k != "entry_sha256"}
    return hashlib.sha256(canonical_json(rest).encode("utf-8")).hexdigest()



class DrawInfo(_Strict):
    """One task draw: its index d (a seeded method's seed), its tasks in the order they were merged."""

    index: int = Field(ge=0)
    tasks: list[str] = Field(min_length=1)


class DrawSet(_Strict):
    """The draws of one size N: ``n<N>-d<D>-<8 hex of the draws' sorted task lists>``."""

    id: str = Field(pattern=r"^n[0-9]+-d[0-9]+-[0-9a-f]{8}$")
    seed: int = Field(ge=0)             # the permutations' seed (``run --seed``)
    requested: int | Literal["all"]     # ``--draws``
    draws: list[DrawInfo] = Field(min_length=1)


class DrawScores(_Strict):
    index: int = Field(ge=0)
    scores: dict[str, FiniteFloat]
    normalized: FiniteFloat
    merged_sha256: str | None = Field(default=None, pattern=_SHA256)


class TuningStep(_Strict):
    params: dict[str, Any]
    validation_score: FiniteFloat


class Tuning(_Strict):
    """The tuned track's search on one draw (``bench/tune.py``): every tried config, in order, and the choice."""

    index: int = Field(ge=0)
    chosen: dict[str, Any]
    evaluations: int = Field(ge=1)
    budget: int = Field(ge=1)
    validation_score: FiniteFloat
    path: list[TuningStep] = Field(min_length=1)
    seconds: float = Field(ge=0)


class Aggregate(_Strict):
    """The mean over draws of the normalized score, its bootstrap 95 % CI and the between-draw SD; the retained
    gain (``bench.stats``), its CI from the same replicates and per draw (None: n/a, a draw kept no task)."""

    normalized: FiniteFloat
    ci95: tuple[FiniteFloat, FiniteFloat]
    draw_sd: FiniteFloat | None
    per_draw: list[FiniteFloat]
    retained: FiniteFloat | None
    retained_ci95: tuple[FiniteFloat, FiniteFloat] | None
    retained_per_draw: list[FiniteFloat] | None


class ItemsFile(_Strict):
    """A per-item score file, relative to the entry's folder, pinned by its sha256.

    The path must stay inside the entry's folder (a submission is untrusted input: ``../..`` or an absolute
    path would make validation read any file of the machine that runs it)."""

    path: str
    sha256: str = Sha256

    @field_validator("path")
    @classmethod
    def _inside(cls, path: str) -> str:
        parts = PurePosixPath(path).parts
        if not parts or path.startswith(("/", "\\")) or ":" in path or "\\" in path or ".." in parts:
            raise ValueError(f"{path!r} must be a relative path inside the entry's folder (no '..', no absolute "
                             "path), such as items/methods/<method>.json")
        return path


class Items(_Strict):
    reference: ItemsFile  # pretrained and LoRA rows of every task of the draws (shared by the folder)
    method: ItemsFile     # this method's rows, per draw and task


class BootstrapInfo(_Strict):
    B: int = Field(ge=0)
    seed: int


class ReferenceRow(_Strict):
    scores: dict[str, FiniteFloat]          # every task of the draws


class PretrainedRow(ReferenceRow):
    result: Aggregate


class Entry(_Strict):
    schema_version: Literal[2] = SCHEMA_VERSION
    leaderboard_version: Literal["v2"] = LEADERBOARD_VERSION
    protocol_version: Literal[2] = PROTOCOL_VERSION
    backbone: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    track: Literal["default", "tuned"]
    n_tasks: int = Field(ge=1)
    draw_set: DrawSet
    method: MethodInfo                  # params without ``seed`` for a seeded method: its seed is the draw index
    data: Literal["none", "validation", "calibration", "validation+calibration"] = "none"  # besides the adapters
    per_draw: list[DrawScores] = Field(min_length=1)
    result: Aggregate
    pretrained: PretrainedRow
    lora: ReferenceRow
    retained_excluded: list[str]        # tasks where the LoRA does not beat pretrained: not in the retained gain
    items: Items
    bootstrap: BootstrapInfo
    provenance: Provenance
    tuning: list[Tuning] | None = None  # track "tuned": the search of each draw, in draw order
    # which protocol produced it: "default", or "reference" (`run --protocol reference`, the STAR reference's
    # items, inputs and scoring); absent in a file = default, so entries from before it keep their hashes
    protocol: Literal["default", "reference"] = "default"
    entry_sha256: str = Sha256

    def _dump(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        if data["tuning"] is None:  # a default-track entry has no such key (and hashes as before it existed)
            data.pop("tuning")
        if data["protocol"] == "default":
            data.pop("protocol")
        return data

    def content(self) -> dict[str, Any]:
        data = self._dump()
        data.pop("entry_sha256")
        return data

    def to_json(self) -> str:
        return json.dumps(self._dump(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @property
    def tasks(self) -> list[str]:
        return sorted({t for d in self.draw_set.draws for t in d.tasks})


def seal(fields: dict[str, Any]) -> Entry:
    draft = Entry.model_validate({**fields, "entry_sha256": "0" * 64})
    return draft.model_copy(update={"entry_sha256": content_sha256(draft.content())})


def json_schema() -> dict[str, Any]:
    schema = Entry.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"merge-bench leaderboard entry (schema_version {SCHEMA_VERSION}, protocol v{PROTOCOL_VERSION})"
    return schema
