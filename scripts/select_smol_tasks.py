#!/usr/bin/env python
"""Decide which trained smol adapters enter the suite's pool, and record every task tried.

    select_smol_tasks.py [--adapters adapters/smol] [--tasks a,b] [--prune]

A task is kept when, on its validation set (carved from train, never a test item), its LoRA beats both the
pretrained model and the chance score by at least ``MARGIN`` points. Chance is the majority-class share
of the evaluated items: a LoRA that learns only the answer format (SmolLM2 untrained rarely puts a label
in its first tokens) clears the first bar while sitting at chance, and such a task measures nothing about
merging. The same three numbers on the test items are recorded beside them (the suite's target is that
every kept task clears both bars on test too).

``--readme`` rewrites the README's table of it. Writes ``SELECTION.json`` beside the adapters (every task tried, kept or not, with its numbers);
``--prune`` then removes the dropped tasks' adapter folders and rewrites ``SHA256SUMS``, so the backbone
registry (``merge_bench.backbones``: every folder with an adapter) serves exactly the pool.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from train_adapters import sha256sums, suite_tasks  # noqa: E402

from merge_bench.backbones import AdapterRef, get_backbone  # noqa: E402
from merge_bench.io.files import atomic_write_text  # noqa: E402

MARGIN = 15.0


def chance(manager, name: str) -> float:
    """The majority-class share (%) of a task's evaluated items."""
    from merge_bench.evaluation.quiet import quiet

    with quiet():
        docs = list(manager.load([name])["tasks"][name].eval_docs)
    return 100.0 * Counter(d["mb_target"] for d in docs).most_common(1)[0][1] / len(docs)


def measure(adapters_dir: Path, shorts: list[str]) -> dict[str, dict]:
    """Validation and test accuracy of the pretrained base and each task's LoRA, and each set's chance score."""
    from merge_bench.evaluation.hf_backend import HFEvaluator
    from merge_bench.evaluation.tasks import task_manager

    bb = get_backbone("smol")
    bb = replace(bb, adapters={s: AdapterRef(str(adapters_dir / s)) for s in shorts})
    manager = task_manager()
    evaluator = HFEvaluator(bb, bb.local_base(), manager, device="cpu", dtype=bb.eval.dtype)
    names = [n for s in shorts for n in (f"{s}_val", s)]
    pretrained = evaluator.evaluate(names)
    out = {}
    for s in shorts:
        with evaluator.lora(adapters_dir / s):
            lora = evaluator.evaluate([f"{s}_val", s])
        out[s] = {split: {"pretrained": round(pretrained[key].score, 2), "lora": round(lora[key].score, 2),
                          "chance": round(chance(manager, bb.lm_eval_task(key)), 2), "n": lora[key].n}
                  for split, key in (("validation", f"{s}_val"), ("test", s))}
        print(s, json.dumps(out[s]), flush=True)
    return out


def verdict(numbers: dict) -> tuple[bool, str]:
    v = numbers["validation"]
    over_pre, over_chance = v["lora"] - v["pretrained"], v["lora"] - v["chance"]
    kept = over_pre >= MARGIN and over_chance >= MARGIN
    why = (f"validation: LoRA {v['lora']:.1f} vs pretrained {v['pretrained']:.1f} ({over_pre:+.1f}) and chance "
           f"{v['chance']:.1f} ({over_chance:+.1f}); needs +{MARGIN:.0f} over both")
    return kept, why


def selection_table(record: dict) -> str:
    """The README's table of every task tried (a test keeps the README's copy equal to this)."""
    lines = ["| task | validation: pretrained / LoRA / chance | test: pretrained / LoRA / chance | pool |",
             "|---|---|---|---|"]
    for short, t in record["tasks"].items():
        v, te = t["validation"], t["test"]
        lines.append(f"| {short} | {v['pretrained']:.1f} / {v['lora']:.1f} / {v['chance']:.1f} | "
                     f"{te['pretrained']:.1f} / {te['lora']:.1f} / {te['chance']:.1f} (n = {te['n']}) | "
                     f"{'kept' if t['kept'] else 'dropped'} |")
    return "\n".join(lines) + "\n"


README_BLOCK = ("<!-- smol-selection -->\n", "<!-- /smol-selection -->\n")


def readme_with_table(readme: str, record: dict) -> str:
    """The README's text with its selection block rewritten from ``record``."""
    start, end = README_BLOCK
    head, rest = readme.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}{selection_table(record)}{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapters", type=Path, default=ROOT / "adapters" / "smol")
    ap.add_argument("--tasks", default=None, help="default: every task with a trained adapter")
    ap.add_argument("--prune", action="store_true", help="remove the dropped tasks' adapters, rewrite SHA256SUMS")
    ap.add_argument("--readme", action="store_true", help="rewrite the README's table from SELECTION.json and exit")
    args = ap.parse_args(argv)
    if args.readme:
        readme = ROOT / "README.md"
        record = json.loads((args.adapters / "SELECTION.json").read_text())
        atomic_write_text(readme, readme_with_table(readme.read_text(encoding="utf-8"), record))
        return 0
    trained = [s for s in suite_tasks("smol") if (args.adapters / s / "adapter_config.json").is_file()]
    shorts = [s for s in (args.tasks.split(",") if args.tasks else trained) if s]
    missing = sorted(set(shorts) - set(trained))
    if missing:
        raise SystemExit(f"no trained adapter for {missing} in {args.adapters}")
    path = args.adapters / "SELECTION.json"
    record = json.loads(path.read_text()) if path.is_file() else {"rule": "", "tasks": {}}
    record["rule"] = (f"kept when, on validation, the LoRA beats the pretrained model and the majority-class "
                      f"share by at least {MARGIN:.0f} points each")
    for short, numbers in measure(args.adapters, shorts).items():
        kept, why = verdict(numbers)
        record["tasks"][short] = {**numbers, "kept": kept, "why": why}
    record["tasks"] = {s: record["tasks"][s] for s in suite_tasks("smol") if s in record["tasks"]}
    record["pool"] = [s for s, t in record["tasks"].items() if t["kept"]]
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    if args.prune:
        for short, t in record["tasks"].items():
            if not t["kept"] and (args.adapters / short).is_dir():
                shutil.rmtree(args.adapters / short)
        atomic_write_text(args.adapters / "SHA256SUMS", sha256sums(args.adapters))
    print(json.dumps({s: (t["kept"], t["why"]) for s, t in record["tasks"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
