"""A micro backbone for pipeline tests: the micro Llama, 3 micro tasks with lm-eval YAMLs, and
trained micro adapters. Each task has a constant answer, so a LoRA learns it in a few steps and the
base scores 0: a merged model's per-task scores then show how much of each adapter survived."""
from __future__ import annotations

import json
import random
from pathlib import Path

from micro import train_micro_lora

from merge_bench.backbones import AdapterRef, Backbone, EvalDefaults

MICRO_TASKS = {"color": "blue", "animal": "cat", "answer": "yes"}
WORDS = "the quick brown fox jumps over lazy dog sentence question music guitar man person".split()

TASK_YAML = """task: micro_{short}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
process_docs: !function utils.process_docs
output_type: generate_until
doc_to_text: "{{{{input}}}}"
doc_to_target: "{{{{output}}}}"
generation_kwargs:
  until: ["<|im_end|>", "\\n"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: true
metadata:
  version: 1.0
"""

UTILS = '''def process_docs(dataset):
    return dataset.map(lambda doc: {"mb_id": str(doc["id"])})
'''


def _inputs(short: str, n: int, seed: int) -> list[str]:
    rng = random.Random(f"{short}-{seed}")
    return [f"{short}: " + " ".join(rng.choice(WORDS) for _ in range(4)) for _ in range(n)]


def build_micro_suite(root: Path, base_dir: Path, n_test: int = 6) -> Backbone:
    root = Path(root)
    tasks_dir = root / "tasks"
    tasks_dir.mkdir(parents=True)
    (tasks_dir / "utils.py").write_text(UTILS)
    adapters = {}
    for i, (short, answer) in enumerate(MICRO_TASKS.items()):
        data = root / "data" / f"{short}.jsonl"
        data.parent.mkdir(exist_ok=True)
        rows = [{"id": j, "input": text, "output": answer} for j, text in enumerate(_inputs(short, n_test, 1))]
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        (tasks_dir / f"micro_{short}.yaml").write_text(TASK_YAML.format(short=short, data=data))
        train = [(text, answer) for text in _inputs(short, 8, 0)]
        adapters[short] = AdapterRef(str(train_micro_lora(base_dir, root / "adapters" / short, train, seed=i)))
    return Backbone("micro", "micro", "local/micro-llama", adapters, local_base=lambda: Path(base_dir),
                    task_dirs=(tasks_dir,), eval=EvalDefaults(batch_size=8, max_length=256, dtype="float32"))
