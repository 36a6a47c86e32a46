"""``merge-bench samples RUN --method M --task T``: what the model wrote on each item of a run, with its score."""
from __future__ import annotations

import json
from pathlib import Path


def run(args) -> int:
    from ..bench.samples import read, select

    lines = select(read(Path(args.run)), args.method, args.task, args.draw)
    if args.json:
        print("\n".join(json.dumps(x, ensure_ascii=False) for x in lines))
        return 0
    for x in lines:
        prompt = (x.get("prompt_sha256") or "")[:12]
        print(f"#{x['index']}  id {x['id']}  score {x['score']}  prompt {prompt}  {x['draw'] or ''}".rstrip())
        print("  " + json.dumps(x["response"], ensure_ascii=False))
        if x.get("filtered") not in (None, x["response"]):
            print("  filtered: " + json.dumps(x["filtered"], ensure_ascii=False))
    scores = [x["score"] for x in lines if isinstance(x["score"], (int, float))]
    if scores:
        print(f"{len(lines)} items, mean score {100 * sum(scores) / len(scores):.2f}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("samples", help="print a run's raw answers for one method and task (lm-eval --log_samples)")
    p.add_argument("run", help="a run record (its .samples.jsonl.gz beside it) or the samples file itself")
    p.add_argument("--method", required=True, help="a method key of the run, or pretrained, or lora")
    p.add_argument("--task", required=True, help="a task of the run")
    p.add_argument("--draw", help="a sweep's draw (n<N>-d<index>) when the method ran on the task in several")
    p.add_argument("--json", action="store_true", help="one JSON line per item")
    p.set_defaults(func=run)
