"""What a careful user of the CLI relies on: a finished run is never lost, errors name their culprit in one
line (no traceback), silent successes fail or warn, and plans count what they hide."""
from __future__ import annotations

import json

import pytest

from merge_bench.bench.run import RunConfig, run_benchmark
from merge_bench.cli import main


def count_evaluations(monkeypatch) -> list:
    from merge_bench.evaluation.hf_backend import HFEvaluator

    calls: list = []
    original = HFEvaluator.evaluate
    monkeypatch.setattr(HFEvaluator, "evaluate", lambda self, shorts: calls.append(shorts) or original(self, shorts))
    return calls


# --- a finished run is never lost -------------------------------------------------------------------------

def test_an_out_that_is_a_file_is_refused_before_the_first_evaluation(micro_backbone, cache, tmp_path, monkeypatch,
                                                                        capsys):
    calls = count_evaluations(monkeypatch)
    taken = tmp_path / "F"
    taken.write_text("mine\n")
    assert main(["run", "--backbone", "micro", "--tasks", "color", "--methods", "simple_avg", "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {taken} is a file" in err and "Traceback" not in err
    assert calls == [] and taken.read_text() == "mine\n"
    with pytest.raises(ValueError, match="its parent"):  # a path below a file cannot become a directory
        run_benchmark(RunConfig(backbone="micro", tasks=["color"], methods=["simple_avg"], out=taken / "runs"),
                      backbone=micro_backbone, progress=False)
    assert calls == []


def test_a_record_that_cannot_be_written_still_prints_its_table_and_lands_somewhere_named(
        micro_backbone, cache, tmp_path, monkeypatch, capsys):
    from merge_bench.bench import outputs

    out_dir = tmp_path / "runs"
    real_write = outputs.write_json_atomic

    def failing(path, obj):
        if out_dir in path.parents:  # the disk under --out filled up during the run
            raise OSError(28, "No space left on device")
        real_write(path, obj)

    monkeypatch.setattr(outputs, "write_json_atomic", failing)
    record = run_benchmark(RunConfig(backbone="micro", tasks=["color"], methods=["simple_avg"], out=out_dir),
                           backbone=micro_backbone, progress=False)
    out, err = capsys.readouterr()
    assert "simple_avg" in out  # the table
    saved = list((cache / "runs").glob("micro-*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["record_sha256"] == record["record_sha256"]
    assert f"could not write the run record to {out_dir}" in err and "No space left on device" in err
    assert f"saved it to {saved[0]}" in err and f"run record: {saved[0]}" in err
    assert list(out_dir.glob("*.json")) == []


# --- errors that name their culprit, in one line, with nothing written ---------------------------------------

def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("fmt", ["delta", "auto", "peft"])
def test_a_target_that_matches_nothing_names_itself(micro_loras, tmp_path, capsys, fmt):
    out = tmp_path / "out"
    adapters = [str(p) for p in micro_loras[:2]]
    assert main(["merge", "--method", "simple_avg", "--adapters", *adapters, "--out", str(out), "--format", fmt,
                 "--targets", "q_proj", "bogus_proj"]) == 2
    line = one_error_line(capsys)
    assert "--targets bogus_proj: matches no module" in line and "q_proj, v_proj" in line and not out.exists()


def test_an_automatic_format_is_not_blamed_on_the_user(micro_loras, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["merge", "--method", "ties", "--adapters", *map(str, micro_loras[:2]), "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert "--format auto writes" in line and "(--base)" in line and "--format delta" in line
    assert "--format full writes" not in line and not out.exists()


def test_one_input_or_the_same_input_twice_is_refused(micro_loras, tmp_path, capsys):
    out = tmp_path / "out"
    a, b = map(str, micro_loras[:2])
    assert main(["merge", "--method", "simple_avg", "--adapters", a, "--out", str(out)]) == 2
    assert "got 1 input" in one_error_line(capsys)
    assert main(["merge", "--method", "simple_avg", "--adapters", a, b, a + "/", "--out", str(out)]) == 2
    assert f"{a}/ is given twice" in one_error_line(capsys)
    assert not out.exists()


def test_adapters_of_different_bases_get_a_warning(micro_loras, tmp_path, capsys):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(micro_loras[1], other)
    config = json.loads((other / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "org/another-model"
    (other / "adapter_config.json").write_text(json.dumps(config))
    assert main(["merge", "--method", "simple_avg", "--adapters", str(micro_loras[0]), str(other),
                 "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "warning: the adapters declare different base models" in err and "org/another-model" in err


def test_param_errors_name_the_method(micro_loras, tmp_path, capsys):
    args = ["merge", "--adapters", *map(str, micro_loras[:2]), "--out", str(tmp_path / "out")]
    assert main(["run", "--methods", "ties", "--param", "nope.k=1", "--dry-run"]) == 2
    line = one_error_line(capsys)
    assert "there is no method 'nope'" in line and "ties" in line and "not being run" not in line
    assert main([*args, "--method", "ties", "--param", "k=abc"]) == 2
    assert "method 'ties': parameter 'k': cannot read 'abc' as float" in one_error_line(capsys)
    assert main([*args, "--method", "ties", "--param", "star.eta=2"]) == 2
    assert "names method 'star'; expected 'ties'" in one_error_line(capsys)
    (tmp_path / "out").mkdir()
    assert main([*args, "--method", "ties", "--param", "ties.k=0.5"]) == 2  # the run form is accepted
    line = one_error_line(capsys)
    assert "already exists" in line and "overwrite=True" not in line


def test_an_empty_method_or_task_list_is_an_error(capsys):
    assert main(["run", "--methods", "", "--dry-run"]) == 2
    assert "--methods '' names no method" in one_error_line(capsys)
    assert main(["run", "--tasks", " , ", "--dry-run"]) == 2
    assert "--tasks ' , ' names no task" in one_error_line(capsys)


def test_leaderboard_filters_that_match_nothing_fail(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["leaderboard", "show", "--track", "nope"])
    assert exit_.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    assert main(["leaderboard", "show", "--backbone", "nope"]) == 2
    assert "--backbone nope: no leaderboard entries" in one_error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["leaderboard", "validate", "--root", str(tmp_path / "empty")]) == 2
    assert "no leaderboard entries under" in one_error_line(capsys)


def test_an_unreachable_hub_is_one_line_naming_the_dataset(monkeypatch, capsys):
    import datasets

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "MERGE_BENCH_DATA_DIR",
                 "MERGE_BENCH_MODELS"):
        monkeypatch.delenv(name, raising=False)

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    assert main(["run", "--backbone", "llama", "--tasks", "cola", "--methods", "simple_avg", "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "Traceback" not in err and "input(s) a run needs are missing" in err
    missing = [line for line in out.splitlines() if line.startswith("missing: task cola: ")]
    assert len(missing) == 1 and "dataset nyu-mll/glue (config cola, split" in missing[0]
    assert "could not be loaded from the hub (ConnectionError: Couldn't reach" in missing[0]
    assert "MERGE_BENCH_DATA_DIR" in missing[0]


def test_any_other_library_error_is_one_line_without_verbose(monkeypatch, capsys):
    from merge_bench.commands import methods

    def broken(args):
        raise RuntimeError("deep inside a library\nsecond line")

    monkeypatch.setattr(methods, "run", broken)
    assert main(["methods"]) == 1
    assert one_error_line(capsys) == ("merge-bench methods: error: RuntimeError: deep inside a library "
                                      "(set MERGE_BENCH_TRACEBACK=1 for the traceback)")
    monkeypatch.setenv("MERGE_BENCH_TRACEBACK", "1")
    with pytest.raises(RuntimeError):
        main(["methods"])


# --- the smaller things ------------------------------------------------------------------------------------

def test_version_and_help_that_says_what_and_which_defaults(capsys):
    from merge_bench import __version__
    from merge_bench.bench.plan import DEFAULT_METHODS

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"merge-bench {__version__}\n"
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "The protocol on one backbone" in text  # a description
    assert "--seed SEED seed of the task pick and the task draws" in text and "(default: 42)" in text
    assert f"(default: {', '.join(DEFAULT_METHODS)})" in text
    assert "KEY=VALUE alone when one method runs" in text


def test_run_takes_the_merge_form_of_param_for_one_method():
    from merge_bench.commands.run import parse_method_params

    assert parse_method_params(["k=20", "ties.trim=local"], ["ties"]) == {"ties": {"k": "20", "trim": "local"}}
    with pytest.raises(ValueError, match="key=value alone only when --methods names one method"):
        parse_method_params(["k=20"], ["ties", "star"])


def test_a_full_checkpoint_merge_shows_one_progress_bar(micro_llama, micro_loras, tmp_path, capsys):
    out = tmp_path / "full"
    assert main(["merge", "--method", "ties", "--adapters", *map(str, micro_loras[:2]), "--base", str(micro_llama),
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    bars = {part.split(":")[0].strip() for part in err.replace("\r", "\n").splitlines() if "%|" in part}
    assert bars == {"merge ties + write"}, bars
    assert (out / "model.safetensors.index.json").is_file()


def test_tune_and_run_share_prepared_without_importing_each_other():
    import ast
    from pathlib import Path

    import merge_bench.bench.tune as tune

    imported = set()
    for node in ast.walk(ast.parse(Path(tune.__file__).read_text())):  # type-only imports included
        if isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
    assert ".run" not in imported and ".prepared" in imported


def test_the_methods_table_fits_100_columns(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 100
    assert "ties" in out and "task_arithmetic" in out.replace("\n", "")


def test_check_help_states_its_default_tolerance(capsys):
    from merge_bench.leaderboard.check import DEFAULT_TOLERANCE

    with pytest.raises(SystemExit):
        main(["check", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default: {DEFAULT_TOLERANCE:g}, one item of a 200-item task)" in text
    assert "DEFAULT_TOLERANCE" not in text
