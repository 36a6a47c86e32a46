"""A leaderboard entry says which protocol produced it: "default" (absent in the file, so every entry written
before the field existed keeps its hash) or "reference" (``run --protocol reference``)."""
import json
from pathlib import Path

from merge_bench.leaderboard import schema

ROOT = Path(__file__).parents[1] / "leaderboard" / "v2"
Entry = getattr(schema, "EntryV2", schema.Entry)  # the protocol-v2 entry model


def test_existing_entries_are_default_protocol_and_keep_their_hash():
    path = sorted(ROOT.glob("tiny/default/*/simple_avg.json"))[0]
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert "protocol" not in raw
    entry = Entry.model_validate(raw)
    assert entry.protocol == "default"
    assert schema.content_sha256(entry.content()) == raw["entry_sha256"]

    reference = entry.model_copy(update={"protocol": "reference"})
    assert reference.content()["protocol"] == "reference"
    assert schema.content_sha256(reference.content()) != raw["entry_sha256"]
    assert Entry.model_validate({**raw, "protocol": "reference"}).protocol == "reference"
