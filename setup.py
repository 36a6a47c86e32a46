"""The wheel carries the top-level ``tasks/`` (lm-eval YAMLs, hooks, the embedded suite's data) and
``adapters/tiny/`` and ``adapters/smol/`` inside the package, as ``merge_bench/_data/``, so that ``pip install merge-bench``
brings its tasks and its default backbone the way lm-eval's brings its own. The repository keeps them at
the top, where the design puts them; ``io.files.resource_dir`` finds either place. Everything else is in
pyproject.toml."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLED = ("tasks", "adapters/tiny", "adapters/smol")


class BuildWithData(build_py):
    def run(self) -> None:
        super().run()
        for name in BUNDLED:
            target = Path(self.build_lib) / "merge_bench" / "_data" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(name, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithData})
