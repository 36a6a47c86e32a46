"""The generated ``leaderboard/README.md``."""
from __future__ import annotations

from .groups import Group
from .tracks import TrackComparison
from .views import markdown, tracks_markdown

# From protocol.md, "Reference bugs we do not reproduce" and "Label matching": where the STAR
# reference code (IBM/STAR @ e6bfcf7) is wrong, the protocol fixes it, so numbers can differ.
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


# What the numbers and intervals mean, and what they do not cover (README and page, in inline Markdown that
# ``page.inline_markdown`` renders).
INTRO = (
    "Each size N is merged on several task draws (the first N tasks of seeded permutations of the pool, so "
    "sets are nested in N and the same for every method). Scores are ×100 (accuracy, Spearman ρ or token F1). "
    "**Avg. Normalized** (the headline, as in the STAR paper) is the mean over a draw's tasks of "
    "100 · merged / LoRA, then over the draws; its "
    "**95 % CI** comes from a hierarchical paired bootstrap (B = 2000, fixed seed): draws are resampled, then "
    "each task's items, with the same indices for every method and for the LoRA and pretrained rows. "
    "**Δ vs simple_avg** is the paired difference with its CI and P(Δ > 0); **Rank [95 %]** is the rank and the "
    "2.5–97.5 % range of a method's rank over the replicates; **Tied 1st** (`=`) marks the methods whose paired CI of "
    "the difference to the leader contains 0. Pairwise claims are Holm-adjusted (`merge-bench leaderboard "
    "show --json`, and the run record's `stats.pairs`)."
)
RETAINED = (
    "**Retained gain** is 100 · (merged − pretrained) / (LoRA − pretrained) per task, averaged the same way: "
    "the share of what fine-tuning added that the merge keeps. The normalized score credits a merge with what "
    "the untrained base already scores (guessing on a 3-class task earns 33 there); the retained gain puts the "
    "pretrained model at 0 and the LoRA at 100. Its CI comes from the same bootstrap replicates. Tasks where the "
    "LoRA does not beat pretrained would divide by noise: they are left out of it and named under the table. "
    "The second table of each group gives every row's per-task scores with their Wilson 95 % intervals."
)
NOT_COVERED = (
    "What the intervals do not cover: engine nondeterminism (another backend, GPU or kernel can flip "
    "borderline greedy answers; HF vs vLLM is checked separately, and `merge-bench check` allows 0.5 points), "
    "and tasks outside the backbone's pool (the draws resample this pool only). With few draws the outer level "
    "sees few task sets, so the CI is conditional on the pool more than on the draws."
)


TRACKS_TEXT = (
    "**Tuned vs default**: where a backbone, N and draw set has entries on both tracks, one table joins them, "
    "one row per method on both: its mean [95 % CI], rank (on that track's own table) and data on each track, "
    "what the tuned track's search chose (and the validation evaluations it spent), and the paired difference "
    "**Δ tuned − default** with its 95 % CI and P(Δ > 0), from the same hierarchical bootstrap as the rows "
    "(same B, seed and resampling indices: both tracks merge the same draws and score the same items). "
    "**Rank move** is the places gained when tuned."
)
# The shape of ``show --json`` (README only: the page has no command line).
SHOW_JSON = (
    "`merge-bench leaderboard show --json` prints one row per backbone, track, N and method, then the group's "
    "pretrained and LoRA rows (`kind`); each row has `normalized`, `ci95`, `retained`, `retained_ci95`, "
    "`retained_excluded` and `per_task` (draw, task, score, `wilson95`); `--csv` prints the same rows flat. Each "
    "row has `vs_default`: on a tuned row whose method also has a default-track entry on the same draws, the paired "
    "`delta` (tuned − default), `delta_ci95`, `p_delta_gt0`, `default_normalized`, `default_ci95`, "
    "`default_rank` and `rank_change` (default rank − tuned rank); null on every other row."
)


def plot_name(g: Group) -> str:
    """The per-(backbone, track) plot under plots/."""
    return f"{g.backbone}_{g.track}_normalized.png"


def heatmap_name(g: Group) -> str:
    return f"{g.backbone}_{g.track}_{g.draw_set.id}_heatmap.png"


def render_readme(groups: list[Group], comparisons: list[TrackComparison] = ()) -> str:
    lines = [
        "# merge-bench leaderboard",
        "",
        "Generated by `merge-bench leaderboard build` from the entries under `v2/`; do not edit it by hand. "
        "Page: [index.html](index.html). How to add a method: [CONTRIBUTING.md](CONTRIBUTING.md).",
        "",
        "## Task draws, two scores and 95 % confidence intervals",
        "",
        INTRO,
        "",
        RETAINED,
        "",
        NOT_COVERED,
        "",
    ]
    lines += markdown(list(groups), plot_name, heatmap_name) if groups else ["No entries yet.", ""]
    if comparisons:
        lines += [TRACKS_TEXT, "", SHOW_JSON, ""] + tracks_markdown(list(comparisons))
    else:
        lines += [SHOW_JSON, ""]
    lines += ["## Protocol notes", "",
              "Where the reference implementation (STAR, IBM/STAR @ e6bfcf7) has bugs, the protocol does not "
              "reproduce them:", ""]
    lines += [f"- {note}" for note in PROTOCOL_NOTES]
    return "\n".join(lines) + "\n"
