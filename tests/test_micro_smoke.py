"""The micro smoke suite tells a working merge from a broken one, and its first build keeps the console
clean: `merge-bench run --backbone micro` from a fresh cache prints merge-bench's lines only."""
from __future__ import annotations

import json
import textwrap

from merge_bench.cli import main

BROKEN = '''
from merge_bench.merging.delta import weighted_sum
from merge_bench.merging.methods import MergeMethod


class Broken(MergeMethod):
    name = "broken"
    description = "a merge that loses every task vector (each weighted by 0)"
    lowrank = True

    def merge(self, deltas, key):
        return weighted_sum(deltas, [0.0] * len(deltas))
'''


def test_micro_merges_score_above_zero_and_a_broken_merge_does_not(cache, tmp_path, capfd):
    plugin = tmp_path / "broken.py"
    plugin.write_text(textwrap.dedent(BROKEN))
    assert main(["run", "--backbone", "micro", "--methods", f"simple_avg,{plugin}:Broken",
                 "--out", str(tmp_path / "runs")]) == 0
    out, err = capfd.readouterr()
    record = json.loads(next((tmp_path / "runs").glob("micro-*.json")).read_text())
    working, broken = record["methods"]["simple_avg"], record["methods"]["broken"]
    assert working["normalized"] > 0 and working["scores"]["animal"] > 0 and working["scores"]["answer"] > 0
    assert broken["normalized"] == 0 and set(broken["scores"].values()) == {0.0}
    assert set(record["pretrained"]["scores"].values()) == {0.0}
    # the first build (model, tokenizer, three trained adapters) happened in this run, quietly
    assert (cache / "micro-v2" / "COMPLETE").is_file()
    stray = [line for line in err.splitlines() if line.strip()
             and not line.startswith(("backbone micro", "run record: ")) and "evaluating" not in line]
    assert stray == [], stray
    assert out.startswith("method") or not out.startswith("\n"), out[:200]  # no blank lines from the tokenizer trainer

    # `merge-bench tasks --backbone micro` lists the micro tasks (its YAMLs live in the build, not in tasks/)
    assert main(["tasks", "--backbone", "micro"]) == 0
    out, err = capfd.readouterr()
    rows = [line.split()[0] for line in out.splitlines()[2:]]
    assert rows == ["micro_color", "micro_animal", "micro_answer"] and err == ""
