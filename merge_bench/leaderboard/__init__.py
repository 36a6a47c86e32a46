"""The versioned leaderboard: entry schema, conversion from run records, validation, rendering, checks.

Entries live at ``leaderboard/v1/<backbone>/<task-set id>/<method key>.json`` (see ``store``).
"""
from __future__ import annotations

from .build import build_leaderboard
from .check import DEFAULT_TOLERANCE, CheckReport, load_baseline, run_check
from .convert import entries_from_record, plugin_file_info
from .schema import LEADERBOARD_VERSION, PROTOCOL_VERSION, SCHEMA_VERSION, Entry, content_sha256, json_schema
from .store import default_root, entry_path, load_entries, read_entry, task_set_id, write_entry
from .submit import SubmitResult, submit
from .tables import group_entries, show_text
from .validate import Problem, validate_leaderboard

__all__ = [
    "DEFAULT_TOLERANCE", "LEADERBOARD_VERSION", "PROTOCOL_VERSION", "SCHEMA_VERSION", "CheckReport", "Entry",
    "Problem", "SubmitResult", "build_leaderboard", "content_sha256", "default_root", "entries_from_record",
    "entry_path", "group_entries", "json_schema", "load_baseline", "load_entries", "plugin_file_info",
    "read_entry", "run_check", "show_text", "submit", "task_set_id", "validate_leaderboard", "write_entry",
]
