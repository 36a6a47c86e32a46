"""``merge-bench merge``: merge adapters with one method and write the result."""
from __future__ import annotations

import time


from ..merging import FORMATS

def parse_params(items: list[str] | None, method: str | None = None) -> dict[str, str]:
    """``["k=v", ...]`` → ``{"k": "v"}``; values stay text for the method's typed parser. ``METHOD.k=v``, the
    form ``run`` takes, is accepted too when METHOD is ``method`` (the method's name)."""
    params: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"bad --param {item!r}: expected key=value or METHOD.key=value (e.g. --param lam=0.3)")
        owner, dot, short = key.strip().rpartition(".")
        if dot and method is not None:
            if owner != method:
                raise ValueError(f"--param {item!r} names method {owner!r}; expected {method!r} (the --method) "
                                 "or no method: key=value")
            key = short
        if key.strip() in params:
            raise ValueError(f"--param {key.strip()!r} given twice")
        params[key.strip()] = value.strip()
    return params


def check_inputs(adapters: list[str]) -> None:
    """A merge needs two or more distinct inputs (one input, or one given twice, is a typo or a wrong glob);
    LoRAs that declare different base models get a warning (the same model can live under two names)."""
    import json
    import sys
    from pathlib import Path

    if len(adapters) < 2:
        raise ValueError(f"--adapters: got 1 input ({adapters[0]}); expected at least 2 to merge")
    seen: dict[str, str] = {}
    for spec in adapters:
        path = Path(spec).expanduser()
        key = str(path.resolve()) if path.exists() else spec
        if key in seen:
            raise ValueError(f"--adapters: {spec} is given twice (as {seen[key]} and {spec}); expected distinct inputs")
        seen[key] = spec
    bases = {}
    for spec in adapters:
        config = Path(spec).expanduser() / "adapter_config.json"
        if config.is_file():
            try:
                bases[spec] = json.loads(config.read_text()).get("base_model_name_or_path")
            except (ValueError, OSError):
                continue  # the adapter reader reports a bad config with its file name
    if len({b for b in bases.values() if b}) > 1:
        listed = "; ".join(f"{spec}: {base}" for spec, base in bases.items())
        print(f"warning: the adapters declare different base models ({listed}); merging assumes one base",
              file=sys.stderr)


def calibration_sets(specs: list[str], n_adapters: int, base: str | None) -> list[list[str]]:
    """``--calibration``: one spec per adapter, in order, each ``BACKBONE:TASK`` (that task's training rows,
    rendered as the backbone's prompts) or a JSONL file of prompts."""
    from pathlib import Path

    if len(specs) != n_adapters:
        raise ValueError(f"--calibration: {len(specs)} spec(s) for {n_adapters} adapter(s); give one per adapter, "
                         "in the same order (BACKBONE:TASK or prompts.jsonl)")
    from ..evaluation.calibration import file_prompts

    out = []
    for spec in specs:
        if spec.endswith(".jsonl") or Path(spec).is_file():
            out.append(file_prompts(Path(spec)))
            continue
        backbone_name, sep, task = spec.partition(":")
        if not sep or not task:
            raise ValueError(f"--calibration {spec!r}: expected BACKBONE:TASK (e.g. tiny:nli) or a prompts .jsonl file")
        from transformers import AutoTokenizer

        from ..backbones import get_backbone
        from ..evaluation.calibration import task_prompts
        from ..evaluation.tasks import task_manager

        bb = get_backbone(backbone_name)
        if task not in bb.adapters:
            raise ValueError(f"--calibration {spec!r}: backbone {bb.name} has no task {task!r} ({', '.join(bb.tasks)})")
        base_dir = base or (bb.local_base() if bb.local_base else None)
        tokenizer = AutoTokenizer.from_pretrained(base_dir) if bb.chat_template and base_dir else None
        out.append(task_prompts(bb, task, task_manager(bb.task_dirs), tokenizer))
    return out


def run(args) -> int:
    from ..merging.api import merge
    from ..merging.methods import get_method

    cls = get_method(args.method)
    params = parse_params(args.param, cls.name)
    cls(**params)  # fail on an unknown method or parameter before reading any input
    check_inputs(args.adapters)
    start = time.perf_counter()
    calibration = calibration_sets(args.calibration, len(args.adapters), args.base) if args.calibration else None
    result = merge(args.method, args.adapters, params=params, base=args.base, out=args.out, format=args.format,
                   device=args.device, dtype=args.dtype, overwrite=args.overwrite, targets=args.targets,
                   progress=True, threads=args.threads, calibration=calibration)
    report = result.output
    kind = f"low-rank, rank {report.rank}" if report.rank else ("low-rank" if result.is_lowrank else "dense")
    print(f"merged {len(result.inputs)} inputs with {result.method}: {len(result.shapes)} matrices ({kind}); "
          f"wrote {report.format} to {report.out} ({report.size_bytes / 2**20:.1f} MiB) "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


def register(sub) -> None:
    p = sub.add_parser("merge", help="merge LoRA adapters or fine-tuned checkpoints with one method",
                       description="Merge task adapters into one model and write it atomically.")
    p.add_argument("--method", required=True,
                   help="a registered method (see `merge-bench methods`) or path/file.py:Class")
    p.add_argument("--param", action="append", metavar="[METHOD.]KEY=VALUE",
                   help="a method hyperparameter, e.g. lam=0.3 or task_arithmetic.lam=0.3 (repeatable)")
    p.add_argument("--adapters", nargs="+", required=True, metavar="DIR",
                   help="PEFT LoRA directories, full fine-tuned checkpoints, or hub ids")
    p.add_argument("--out", required=True, help="output directory (must not exist unless --overwrite)")
    p.add_argument("--base", help="base model directory or hub id (needed for full checkpoints and --format full)")
    p.add_argument("--format", default="auto", choices=FORMATS,
                   help="peft adapter (low-rank results), full checkpoint, bare deltas, or auto (default)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] for the merge maths (default cpu)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="dtype of the stored result (maths run in float32)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for the merge (default: torch's): intra-op threads, or for a factor-space "
                        "merge of LoRAs the number of matrices merged at once")
    p.add_argument("--targets", nargs="+", metavar="MODULE",
                   help="module name suffixes to merge, e.g. q_proj v_proj or q,v (default: all targeted)")
    p.add_argument("--calibration", nargs="+", metavar="SPEC",
                   help="for methods that need data (regmean): one per adapter, in order, BACKBONE:TASK (its training "
                        "rows as prompts, at most 256) or a JSONL file of prompts")
    p.set_defaults(func=run)
