"""The GitHub Actions workflow that checks a submission's pull request: it runs untrusted code, so it must use
the pull_request trigger with a read-only token and no secrets; it validates, then reruns only the new entries
of the embedded backbones."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

WORKFLOW = Path(__file__).parents[1] / ".github" / "workflows" / "leaderboard-submission.yml"


def _load():
    text = WORKFLOW.read_text(encoding="utf-8")
    return text, yaml.safe_load(text)


def test_runs_untrusted_code_without_secrets_or_write_access():
    text, flow = _load()
    triggers = flow.get("on", flow.get(True))           # YAML 1.1 reads a bare `on` as True
    assert set(triggers) == {"pull_request"} and "pull_request_target" not in text
    assert flow["permissions"] == {"contents": "read"}
    assert "secrets." not in text and "GITHUB_TOKEN" not in text
    (job,) = flow["jobs"].values()
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["persist-credentials"] is False
    # the PR's own text never reaches a shell through ${{ }} (branch names and titles are attacker-chosen)
    assert not re.search(r"\$\{\{\s*github\.(head_ref|event\.pull_request\.(title|body|head))", text)


def test_validates_then_checks_only_the_new_embedded_entries():
    text, flow = _load()
    (job,) = flow["jobs"].values()
    runs = [s.get("run", "") for s in job["steps"]]
    validate = next(i for i, r in enumerate(runs) if "merge-bench leaderboard validate" in r)
    check = next(i for i, r in enumerate(runs) if "merge-bench check --baseline" in r)
    assert validate < check
    entry, embedded = re.findall(r"grep -E '([^']+)'", text)
    changed = ["leaderboard/v2/tiny/default/n2-d3-339f958c/mine.json",
               "leaderboard/v2/tiny/default/n2-d3-339f958c/items/methods/mine.json",
               "leaderboard/v2/tiny/default/n2-d3-339f958c/items/reference.json",
               "leaderboard/v2/llama/default/n2-d3-00000000/mine.json", "leaderboard/README.md"]
    entries = [p for p in changed if re.search(entry, p)]
    assert entries == [changed[0], changed[3]]
    assert [p for p in entries if re.search(embedded, p)] == [changed[0]]
