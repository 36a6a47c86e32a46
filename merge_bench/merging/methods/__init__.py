"""The method registry: built-in methods, installed plugins and plugin files, by name.

Third-party methods plug in through the entry-point group ``merge_bench.methods`` (the entry point
names a ``MergeMethod`` subclass) or as ``path/to/file.py:ClassName``.

Method modules import torch and the maths helpers (``..delta``, ``..numerics``, ``..selection``,
``.factor``, ``.ops``) inside the functions that use them, so that listing the registry
(``merge-bench methods``, the CLI's parser) stays a fast, torch-free import; a layout test checks it.
"""
from __future__ import annotations

import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path

from .base import MergeMethod, ModuleStream, Param, check_grid
from .breadcrumbs import Breadcrumbs
from .cart import Cart
from .core import core_variant
from .ctm import CtM
from .dare import Dare
from .drm import DRM
from .iso_c import IsoC
from .iso_cts import IsoCTS
from .knots import Knots
from .metagpt import MetaGPT
from .pcb import PCB
from .regmean import RegMean
from .robustmerge import RobustMerge
from .simple_avg import SimpleAvg
from .star import Star
from .svc import SUFFIX as SVC_SUFFIX
from .svc import svc_variant
from .tall_masks import TallMasks
from .task_arithmetic import TaskArithmetic
from .ties import Ties
from .tsv import TSV
from .wudi import Wudi

# Core Space variants (``core.py``): these rules run on the R×R cores of the stacked LoRA factors.
CORE = tuple(core_variant(cls) for cls in (TaskArithmetic, Ties, Dare, TSV, IsoC, Cart))

BUILTIN: tuple[type[MergeMethod], ...] = (
    SimpleAvg, TaskArithmetic, Ties, TallMasks, Dare, Breadcrumbs,
    MetaGPT, Star, DRM, Knots, TSV, IsoC, IsoCTS, RegMean,
    Cart, Wudi, RobustMerge, PCB, CtM, *CORE,
)

__all__ = ["MergeMethod", "ModuleStream", "Param", "available_methods", "get_method", "BUILTIN"]


def _check(cls: object, origin: str) -> type[MergeMethod]:
    if not (isinstance(cls, type) and issubclass(cls, MergeMethod)):
        raise ValueError(f"{origin}: expected a subclass of merge_bench.methods.MergeMethod, got {cls!r}")
    for attr in ("name", "description"):
        if not isinstance(getattr(cls, attr, None), str):
            raise ValueError(f"{origin}: method class {cls.__name__} must set a string {attr!r}")
    check_grid(cls, origin)
    return cls


def available_methods() -> dict[str, type[MergeMethod]]:
    """Built-in methods, then those of installed packages (entry points), by name."""
    methods = {cls.name: cls for cls in BUILTIN}
    for ep in entry_points(group="merge_bench.methods"):
        cls = _check(ep.load(), f"entry point {ep.name!r} ({ep.value})")
        methods.setdefault(cls.name, cls)
    return methods


def load_method_file(spec: str) -> type[MergeMethod]:
    """Load ``path/to/file.py:ClassName``."""
    path_text, _, attr = spec.rpartition(":")
    path = Path(path_text)
    if not path.is_file():
        raise ValueError(f"method file {path} does not exist (from {spec!r}; expected path/to/file.py:ClassName)")
    module_spec = importlib.util.spec_from_file_location(f"merge_bench_plugin_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
    # Registered like an import, so inspect (provenance.merge_code_sha256) and dataclasses find it.
    sys.modules[module_spec.name] = module  # type: ignore[union-attr]
    try:
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException:
        del sys.modules[module_spec.name]  # type: ignore[union-attr]
        raise
    if not hasattr(module, attr):
        raise ValueError(f"method file {path} has no attribute {attr!r}")
    return _check(getattr(module, attr), spec)


def get_method(name: str) -> type[MergeMethod]:
    """A method class by registered name, or from a ``file.py:ClassName`` spec; ``<method>+svc`` is that
    method followed by Singular Value Calibration (``svc.py``)."""
    if name.endswith(SVC_SUFFIX) and len(name) > len(SVC_SUFFIX):
        return svc_variant(get_method(name[: -len(SVC_SUFFIX)]))
    if name.endswith(".py") or ".py:" in name:
        if ":" not in name.rsplit(".py", 1)[-1] and not name.rsplit(".py", 1)[-1].startswith(":"):
            raise ValueError(f"method file spec {name!r} must name a class: path/to/file.py:ClassName")
        return load_method_file(name)
    methods = available_methods()
    if name not in methods:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(sorted(methods))}")
    return methods[name]
