"""Write the STAR reference protocol's variant of every task the reference evaluates
(``tasks/<folder>/<task>_ref.yaml``, see ``merge_bench/evaluation/reference.py``); a test keeps them current.

    .venv/bin/python scripts/make_reference_tasks.py
"""
from __future__ import annotations

from merge_bench.evaluation.reference import variant_files
from merge_bench.evaluation.tasks import tasks_dir
from merge_bench.io.files import atomic_write_text


def main() -> None:
    for path, text in variant_files(tasks_dir()).items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)
            print("wrote", path)


if __name__ == "__main__":
    main()
