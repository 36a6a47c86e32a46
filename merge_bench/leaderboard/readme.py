"""The generated ``leaderboard/README.md``."""
from __future__ import annotations

from .schema import LEADERBOARD_VERSION, PROTOCOL_VERSION
from .sweep_views import markdown as v2_markdown
from .sweep_views import tracks_markdown
from .sweeps import GroupV2
from .tracks import TrackComparison
from .tables import Group, render_table

# From protocol.md, "Reference bugs we do not reproduce" and "Label matching": where the STAR
# reference code (IBM/STAR @ e6bfcf7) is wrong, protocol v1 fixes it, so numbers can differ.
PROTOCOL_NOTES = (
    "Label matching: the prediction is the answer label that occurs first in the generated text, "
    "case-insensitively, at word boundaries, longest label first (\"not violence\" beats \"violence\"; "
    "\"no\" does not match inside \"know\"); no match counts as wrong. The reference used substring matching.",
    "Flan hella: the reference took the gold label of a batch from the batch's first item "
    "(16 of 160 items scored wrongly); we score every item against its own gold label.",
    "qasc token F1: the reference compared words with characters; we compare tokens with tokens.",
    "Mistral gold mapping: the reference reused the previous item's label when the gold was not in "
    "the label list; we map every item's own gold.",
    "Result naming: the reference sorted tasks by first letter only and left settings (known_rank, "
    "trim) out of result names; entries here are keyed by the sorted task set and the method's full parameters.",
    "Flan inputs over 512 tokens (imdb reviews, long boolq passages) keep their first 511 tokens and "
    "`</s>`, as the reference's tokenizer call does (lm-eval's seq2seq path kept the last 512, cutting "
    "the start of the review instead of the instruction at its end).",
    "Mistral dream: an answer that starts with an option letter (`A`, `A)`, `a.`, `(A)`) is that option, "
    "as in the reference; otherwise the first bracketed option in the answer counts. Unlike the "
    "reference, a letter followed by a space (\"A man ...\") is not an answer: its `startswith(\"a\")` "
    "counted every answer that begins with an a.",
    "stsb: the gold score is rounded to one decimal, as in the reference (the hub stores float32 values, "
    "2.4 as 2.4000000953674316).",
    "BOS: llama and mistral see one BOS token, the one their chat template writes, as lm-eval and vLLM "
    "feed them; the reference tokenized the templated string with the BOS added again (two BOS).",
    "Multiple references (mistral ncbi, gap, qasc): an answer counts against any gold reference, as "
    "Natural Instructions' own evaluation does; the reference read only the first.",
    "Items: a seeded content-hash ranking (balanced per label where the reference balances) that does not"
    " depend on the hub's row order; the reference drew with `random.seed(42)` and `random.sample` per "
    "label over the hub's order. The sizes are the same and comparisons stay paired, but the items differ"
    " from the paper's.",
    "dtype: on a GPU, llama and mistral evaluate in bfloat16 (their published dtype); the reference used "
    "float32.",
    "`merge-bench run --protocol reference` reproduces the reference instead, to check the STAR README's "
    "table: its item draw and order, float32, two BOS, its truncation, its label maps with substring "
    "matching and the bugs above (the batch gold of flan hella and boolq, the previous item's gold, "
    "qasc's character F1); its records say `protocol: reference`.",
)


# What the protocol-v2 intervals mean, and what they do not cover (README and page).
V2_INTRO = (
    "Each size N is merged on several task draws (the first N tasks of seeded permutations of the pool, so "
    "sets are nested in N and the same for every method). **Avg. Normalized** is the mean over the draws; its "
    "**95 % CI** comes from a hierarchical paired bootstrap (B = 2000, fixed seed): draws are resampled, then "
    "each task's items, with the same indices for every method and for the LoRA and pretrained rows. "
    "**Δ vs simple_avg** is the paired difference with its CI and P(Δ > 0); **rank 95 %** is the 2.5–97.5 % "
    "range of a method's rank over the replicates; **tied 1st** (`=`) marks the methods whose paired CI of "
    "the difference to the leader contains 0. Pairwise claims are Holm-adjusted (`merge-bench leaderboard "
    "show --json`, and the run record's `stats.pairs`)."
)
V2_NOT_COVERED = (
    "What the intervals do not cover: engine nondeterminism (another backend, GPU or kernel can flip "
    "borderline greedy answers; HF vs vLLM is checked separately, and `merge-bench check` allows 0.5 points), "
    "and tasks outside the backbone's pool (the draws resample this pool only). With few draws the outer level "
    "sees few task sets, so the CI is conditional on the pool more than on the draws."
)


V2_TRACKS = (
    "**Tuned vs default**: where a backbone, N and draw set has entries on both tracks, one table joins them, "
    "one row per method on both: its mean [95 % CI], rank (on that track's own table) and data on each track, "
    "what the tuned track's search chose (and the validation evaluations it spent), and the paired difference "
    "**Δ tuned − default** with its 95 % CI and P(Δ > 0), from the same hierarchical bootstrap as the rows "
    "(same B, seed and resampling indices: both tracks merge the same draws and score the same items). "
    "**rank move** is the places gained when tuned."
)
# The shape of ``show --json`` (README only: the page has no command line).
V2_TRACKS_JSON = (
    "`merge-bench leaderboard show --json` prints one row per backbone, track, N and method; each row has "
    "`vs_default`: on a tuned row whose method also has a default-track entry on the same draws, the paired "
    "`delta` (tuned − default), `delta_ci95`, `p_delta_gt0`, `default_normalized`, `default_ci95`, "
    "`default_rank` and `rank_change` (default rank − tuned rank); null on every other row."
)


def plot_names(group: Group) -> tuple[str, str]:
    """(per-backbone normalized-vs-tasks plot, per-group heatmap) file names under plots/."""
    return f"{group.backbone}_normalized_vs_tasks.png", f"{group.backbone}_{group.task_set}_heatmap.png"


def render_readme(groups: list[Group], groups_v2: list[GroupV2] = (), v2_plot=None,
                  comparisons: list[TrackComparison] = ()) -> str:
    lines = [
        "# merge-bench leaderboard",
        "",
        "Generated by `merge-bench leaderboard build` from the entries under `v2/` (protocol v2) and "
        f"`{LEADERBOARD_VERSION}/` (protocol v1); do not edit it by hand. Page: [index.html](index.html). "
        "How to add a method: [CONTRIBUTING.md](CONTRIBUTING.md).",
        "",
        "## Protocol v2: task draws and 95 % confidence intervals",
        "",
        V2_INTRO,
        "",
        V2_NOT_COVERED,
        "",
    ]
    lines += v2_markdown(list(groups_v2), v2_plot) if groups_v2 else ["No protocol v2 entries yet.", ""]
    if comparisons:
        lines += [V2_TRACKS, "", V2_TRACKS_JSON, ""] + tracks_markdown(list(comparisons))
    lines += [
        f"## Protocol v{PROTOCOL_VERSION} entries (one task set each, point estimates)",
        "",
        "Kept as published and validated as v1 (never migrated). They carry no interval: differences of a "
        "few points between them are mostly sampling noise (see protocol v2 above).",
        "",
        f"Protocol v{PROTOCOL_VERSION}. Scores are ×100 (accuracy, Spearman ρ or token F1). "
        "**Avg. Normalized** is the mean over the task set of 100 · score / LoRA score (not clipped "
        "at 100). *Pretrained* is the base model (lower bound); *LoRA (individual)* is each task's own "
        "adapter on its own task (upper bound, 100 by definition). Task-set ids are `n<K>-<hash of "
        "the sorted task names>`.",
        "",
    ]
    if not groups:
        lines += ["No entries yet.", ""]
    backbone = None
    for group in groups:
        if group.backbone != backbone:
            backbone = group.backbone
            plot = f"![normalized score vs number of tasks, {backbone}](plots/{plot_names(group)[0]})"
            lines += [f"### {backbone}", "", plot, ""]
        lines += [
            f"#### {group.title}",
            "",
            f"{len(group.tasks)} tasks: {', '.join(group.tasks)}",
            "",
            render_table(group, tablefmt="github"),
            "",
            f"![per-task scores, {group.title}](plots/{plot_names(group)[1]})",
            "",
        ]
    lines += ["## Protocol notes", "",
              "Where the reference implementation (STAR, IBM/STAR @ e6bfcf7) has bugs, protocol "
              f"v{PROTOCOL_VERSION} does not reproduce them:", ""]
    lines += [f"- {note}" for note in PROTOCOL_NOTES]
    return "\n".join(lines) + "\n"
