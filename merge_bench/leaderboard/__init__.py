"""The leaderboard: entry schema, conversion from sweep records, validation against per-item files, group
statistics, rendering (show, README, page, plots), checks by rerunning, comparisons without rerunning.

Entries live at ``leaderboard/v2/<backbone>/<track>/<draw-set id>/<method key>.json`` (see ``store``).
"""
from __future__ import annotations

from .build import build_leaderboard
from .schema import LEADERBOARD_VERSION, PROTOCOL_VERSION, SCHEMA_VERSION, Entry, content_sha256, json_schema
from .store import default_root, entry_files, entry_path
from .validate import Loaded, Problem, validate_leaderboard

__all__ = [
    "LEADERBOARD_VERSION", "PROTOCOL_VERSION", "SCHEMA_VERSION", "Entry", "Loaded", "Problem",
    "build_leaderboard", "content_sha256", "default_root", "entry_files", "entry_path", "json_schema",
    "validate_leaderboard",
]
