"""Write the validation variant of every task with an adapter (``tasks/<folder>/<task>_val.yaml``) from the
test YAMLs, by the suites' rules in ``merge_bench/evaluation/validation.py``; a test keeps them current.

    .venv/bin/python scripts/make_validation_tasks.py
"""
from __future__ import annotations

from merge_bench.evaluation.tasks import tasks_dir
from merge_bench.evaluation.validation import variant_files
from merge_bench.io.files import atomic_write_text


def main() -> None:
    for path, text in variant_files(tasks_dir()).items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)
            print("wrote", path)


if __name__ == "__main__":
    main()
