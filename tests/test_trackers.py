"""Experiment trackers (--tracker, the sweep setting trackers): what each one logs, read back with its own reader,
equals the output folder's tables; bad names and missing packages are refused before anything is written."""

import json
import math
import struct
from pathlib import Path

import pandas as pd
import pytest

from clbench.runners import trackers
from clbench.runners.cli import main
from clbench.runners.config import RunConfig
from clbench.runners.loop import RunResult
from clbench.runners.record import journal_entry
from clbench.strategies import TrainConfig

TINY = ["--benchmark", "split-digits", "--scenario", "class", "--seeds", "0", "--train-subset", "100",
        "--test-subset", "50", "--epochs", "1", "--threads", "1", "--no-plots", "--quiet"]
INSTALLED = [name for name, (package, _) in trackers.TRACKERS.items() if trackers._installed(package)]


def run_cli(*argv):
    return main([str(a) for a in argv])


def offline_env(monkeypatch, root: Path) -> None:
    """W&B offline and silent with every folder under `root`, no git, no error reports; MLflow's defaults."""
    for name in ("WANDB_API_KEY", "WANDB_PROJECT", "WANDB_ENTITY", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("WANDB_DISABLE_CODE", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(root / name.lower()))


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One naive run and one diverging (failed) run, logged to every installed tracker; the output folder."""
    root = tmp_path_factory.mktemp("trackers")
    out = root / "out"
    with pytest.MonkeyPatch.context() as monkeypatch:
        offline_env(monkeypatch, root)
        code = run_cli("run", *TINY, "--strategy", "naive", "tests.user_strategies:Diverging", "--out", out,
                       *(a for name in INSTALLED for a in ("--tracker", name)))
    assert code == 1  # the diverging run failed, and was logged as such
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False)
    return {
        "out": out,
        "ok": runs.loc[runs["status"] == "ok", "run_id"].item(),
        "failed": runs.loc[runs["status"] == "failed", "run_id"].item(),
        "evals": pd.read_csv(out / "evals.csv"),
        "costs": pd.read_csv(out / "costs.csv"),
        "summary": pd.read_csv(out / "summary.csv"),
        "train": json.loads(runs.loc[runs["status"] == "ok", "train_config"].item()),
    }


def expected_scalars(logged) -> dict[str, dict[int, float]]:
    """Per scalar name its values by step, from the output folder's evals.csv and costs.csv (steps >= 0)."""
    evals = logged["evals"]
    evals = evals[(evals["run_id"] == logged["ok"]) & (evals["step"] >= 0)]
    out: dict[str, dict[int, float]] = {}
    for row in evals.itertuples():
        prefix = trackers.PREFIXES[row.metric]
        out.setdefault(f"{prefix}/exp{row.eval_exp}", {})[row.step] = row.value
        seen = evals[(evals["metric"] == row.metric) & (evals["step"] == row.step) & (evals["eval_exp"] <= row.step)]
        out.setdefault(f"{prefix}/avg", {})[row.step] = seen["value"].mean()
    costs = logged["costs"]
    for row in costs[(costs["run_id"] == logged["ok"]) & (costs["step"] >= 0)].itertuples():
        out.setdefault("train/loss", {})[row.step] = row.train_loss
        out.setdefault("cost/steps", {})[row.step] = row.steps
        out.setdefault("cost/train_s", {})[row.step] = row.train_s
    return out


def expected_summary(logged) -> dict[str, float]:
    row = logged["summary"].set_index("run_id").loc[logged["ok"]]
    return {f"summary/{m}": row[m] for m in ("acc", "bwt", "forgetting", "la", "aia", "acc_taw", "train_s",
                                             "eval_s", "peak_rss_mb")}


# ---------------------------------------------------------------------------------------------------------------------
# TensorBoard


def test_tensorboard_event_files_hold_the_runs_scalars(logged):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = logged["out"] / "tensorboard" / logged["ok"]
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    for tag, by_step in expected_scalars(logged).items():
        assert scalars[tag].keys() == by_step.keys(), tag
        for step, value in by_step.items():  # event files store float32
            assert scalars[tag][step] == pytest.approx(value, rel=1e-6, abs=1e-7), (tag, step)
    assert set(scalars["acc/exp0"]) == {0, 1, 2, 3, 4}  # R's rows, not the baseline b
    for tag, value in expected_summary(logged).items():
        assert list(scalars[tag].values()) == [pytest.approx(value, rel=1e-6)], tag
    config_text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    config = json.loads(config_text.strip("`\n"))
    assert config["run_id"] == logged["ok"] and config["strategy"] == "naive" and config["train"]["epochs"] == 1
    assert "_hparams_/session_start_info" in events.summary_metadata

    failed = EventAccumulator(str(logged["out"] / "tensorboard" / logged["failed"]))
    failed.Reload()
    assert failed.Tags()["scalars"] == []
    status = failed.Tensors("status/text_summary")[0].tensor_proto.string_val[0].decode()
    assert status.startswith("failed: ") and "nan" in status


# ---------------------------------------------------------------------------------------------------------------------
# MLflow


def test_mlflow_store_holds_params_metric_histories_and_status(logged):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{logged['out'] / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("clbench")
    found = {r.data.tags["clbench.run_id"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(found) == {logged["ok"], logged["failed"]}
    ok = found[logged["ok"]]
    assert ok.info.status == "FINISHED" and logged["ok"] in ok.info.run_name
    params = ok.data.params
    assert params["benchmark"] == "split-digits" and params["strategy"] == "naive" and params["seed"] == "0"
    assert params["run_id"] == logged["ok"] and params["train.epochs"] == "1"
    assert params["train.lr"] == str(logged["train"]["lr"]) and params["train.batch_size"] == str(
        logged["train"]["batch_size"])
    for tag, by_step in expected_scalars(logged).items():
        history = {m.step: m.value for m in client.get_metric_history(ok.info.run_id, tag)}
        assert history == pytest.approx(by_step), tag
    for tag, value in expected_summary(logged).items():
        assert ok.data.metrics[tag] == pytest.approx(value), tag

    failed = found[logged["failed"]]
    assert failed.info.status == "FAILED" and failed.data.tags["clbench.status"] == "failed"
    assert "nan" in failed.data.tags["clbench.error"] and failed.data.metrics == {}


# ---------------------------------------------------------------------------------------------------------------------
# Weights & Biases

BLOCK = 32 * 1024  # the .wandb file: LevelDB's log format, 32 KiB blocks of chunks with 7-byte headers


def wandb_records(path: Path):
    """The protobuf records of a W&B run file (wandb.proto's Record), read chunk by chunk."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending = 7, b""  # after the file header: magic, 2-byte version magic, 1-byte version
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding
            pos += BLOCK - pos % BLOCK
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def read_wandb_run(path: Path) -> dict:
    """config, display name, history (step → key → value), summary and exit code of one offline run."""
    run = {"config": {}, "history": {}, "summary": {}, "exit_code": None}

    def key_of(item):
        return item.key or "/".join(item.nested_key)

    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run["name"] = record.run.display_name
            run["config"].update({u.key: json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "history":
            items = {key_of(i): json.loads(i.value_json) for i in record.history.item}
            run["history"][items.pop("_step")] = items
        elif kind == "summary":
            run["summary"].update({key_of(u): json.loads(u.value_json) for u in record.summary.update})
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    return run


def test_wandb_offline_runs_hold_config_history_and_summary(logged):
    pytest.importorskip("wandb")
    files = sorted((logged["out"] / "wandb").glob("offline-run-*/run-*.wandb"))
    runs = {r["config"]["run_id"]: r for r in map(read_wandb_run, files)}
    assert set(runs) == {logged["ok"], logged["failed"]}
    ok = runs[logged["ok"]]
    assert logged["ok"] in ok["name"] and ok["exit_code"] == 0
    assert ok["config"]["strategy"] == "naive" and ok["config"]["seed"] == 0
    assert ok["config"]["train"]["epochs"] == 1 and ok["config"]["params"] == {}
    for tag, by_step in expected_scalars(logged).items():
        logged_values = {step: values[tag] for step, values in ok["history"].items() if tag in values}
        assert logged_values == pytest.approx(by_step), tag
    for tag, value in expected_summary(logged).items():
        assert ok["summary"][tag] == pytest.approx(value), tag
    assert ok["summary"]["status"] == "ok"
    failed = runs[logged["failed"]]
    assert failed["exit_code"] == 1 and failed["summary"]["status"] == "failed"
    assert failed["history"] == {} and "nan" in failed["summary"]["error"]


def test_wandb_stays_offline_unless_the_user_configured_it(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert trackers.WandbTracker(tmp_path).mode == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert trackers.WandbTracker(tmp_path).mode is None  # the user's WANDB_MODE decides


# ---------------------------------------------------------------------------------------------------------------------
# results, sweeps, bad input


def test_a_tracker_changes_no_result(logged, tmp_path):
    assert run_cli("run", *TINY, "--strategy", "naive", "--out", tmp_path / "plain") == 0
    plain = pd.read_csv(tmp_path / "plain" / "evals.csv")
    tracked = logged["evals"][logged["evals"]["run_id"] == logged["ok"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(plain, tracked, check_exact=True)


SWEEP = """
seeds = [0]
benchmarks = ["split-digits"]
scenarios = ["task"]

[settings]
epochs = 1
train_subset = 100
test_subset = 50
threads = 1
trackers = ["tensorboard"]

[[strategies]]
name = "naive"
"""


def test_sweep_setting_trackers_and_the_flag_add_up(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    offline_env(monkeypatch, tmp_path)
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP)
    out = tmp_path / "out"
    assert run_cli("sweep", path, "--out", out, "--tracker", "mlflow", "--tracker", "tensorboard", "--no-plots",
                   "--quiet") == 0
    run_id = pd.read_csv(out / "runs.csv")["run_id"].item()
    assert [p.name for p in (out / "tensorboard").iterdir()] == [run_id]  # once, though named twice
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("clbench").experiment_id])
    assert run.data.params["run_id"] == run_id and run.data.params["scenario"] == "task"
    acc = pd.read_csv(out / "summary.csv")["acc"].item()
    assert run.data.metrics["summary/acc"] == pytest.approx(acc)


@pytest.mark.parametrize(("setting", "message"), [
    ('trackers = ["tensorbored"]', "unknown tracker (sweep.toml: setting trackers) 'tensorbored' (did you mean "
                                   "'tensorboard'?); valid choices: mlflow, tensorboard, wandb"),
    ('trackers = "mlflow"', "setting trackers='mlflow' must be list"),
    ("trackers = [1]", "unknown tracker (sweep.toml: setting trackers) 1"),
])
def test_bad_sweep_setting_trackers_is_refused(tmp_path, monkeypatch, capsys, setting, message):
    monkeypatch.chdir(tmp_path)
    Path("sweep.toml").write_text(SWEEP.replace('trackers = ["tensorboard"]', setting))
    assert run_cli("sweep", "sweep.toml", "--out", "out") == 2
    assert message in capsys.readouterr().err
    assert not Path("out").exists()


@pytest.mark.parametrize("command", ["run", "sweep", "bench"])
def test_unknown_tracker_name_writes_nothing(tmp_path, capsys, command):
    out = tmp_path / "out"
    (tmp_path / "sweep.toml").write_text(SWEEP)
    argv = {"run": ["run", *TINY, "--strategy", "naive"], "sweep": ["sweep", tmp_path / "sweep.toml"],
            "bench": ["bench", "--suite", "digits"]}[command]
    assert run_cli(*argv, "--out", out, "--tracker", "mlflw") == 2
    err = capsys.readouterr().err
    assert "unknown tracker (--tracker) 'mlflw' (did you mean 'mlflow'?); valid choices: mlflow, tensorboard, " \
           "wandb" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_missing_tracker_package_is_refused_before_any_run(tmp_path, monkeypatch, capsys, command):
    real_find_spec = trackers.importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real_find_spec(name, *a))
    out = tmp_path / "out"
    if command == "run":
        argv = ["run", *TINY, "--strategy", "naive"]
    else:
        (tmp_path / "sweep.toml").write_text(SWEEP.replace('["tensorboard"]', '["mlflow"]'))
        argv = ["sweep", tmp_path / "sweep.toml"]
    assert run_cli(*argv, "--out", out, "--tracker", "mlflow") == 2
    assert "clbench: error: --tracker mlflow needs MLflow: pip install 'clbench[mlflow]'" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------------
# what a run logs, without any tracker package


def synthetic_result(evals, costs, status="ok", phase="final", validation_split=None) -> tuple:
    config = RunConfig(benchmark="split-digits", scenario="task", strategy="naive", seed=3, n_experiences=3,
                       train=TrainConfig(epochs=1, lr=0.1), phase=phase, validation_split=validation_split)
    result = RunResult(config=config, status=status, error="" if status == "ok" else "boom", duration_s=2.5,
                       evals=evals, costs=costs)
    return result, journal_entry(result, versions={}, device="cpu")


def cost(step, loss=0.5):
    return {"step": step, "train_s": 1.0, "eval_s": 0.25, "peak_rss_mb": 100.0, "strategy_mem_mb": 0.0,
            "train_loss": loss, "steps": 0 if step < 0 else 4}


def test_tracked_run_averages_only_fully_evaluated_rows():
    # 3 experiences, --eval-every 3: rows 0 and 1 evaluate only R[i, i] and R[i, i+1]; the last row is full
    R = {(0, 0): 0.9, (0, 1): 0.1, (1, 1): 0.8, (1, 2): 0.2, (2, 0): 0.6, (2, 1): 0.5, (2, 2): 0.9}
    evals = [{"step": -1, "eval_exp": j, "metric": "accuracy", "split": "test", "value": 0.1, "n": 10}
             for j in range(3)]
    evals += [{"step": i, "eval_exp": j, "metric": "accuracy", "split": "test", "value": v, "n": 10}
              for (i, j), v in R.items()]
    result, entry = synthetic_result(evals, [cost(-1, math.nan), cost(0), cost(1, 0.25), cost(2, 0.125)])
    run = trackers.tracked_run(result, entry)
    assert sorted(run.steps) == [0, 1, 2]
    assert "acc/avg" not in run.steps[1]  # R[1, 0] was not evaluated: R[1, 1] alone is not ACC after experience 1
    assert run.steps[1] | {"acc/exp1": 0.8, "acc/exp2": 0.2} == run.steps[1] and "acc/exp0" not in run.steps[1]
    assert run.steps[0]["acc/avg"] == 0.9 and run.steps[2]["acc/avg"] == pytest.approx(2 / 3)
    assert [run.steps[i]["train/loss"] for i in range(3)] == [0.5, 0.25, 0.125]
    assert run.steps[2]["cost/steps"] == 4
    assert run.summary["summary/acc"] == pytest.approx(2 / 3)
    assert run.summary["summary/bwt"] == pytest.approx(((0.6 - 0.9) + (0.5 - 0.8)) / 2)
    assert run.summary["summary/fwt"] == pytest.approx(((0.1 - 0.1) + (0.2 - 0.1)) / 2)
    assert run.summary["summary/train_s"] == 4.0 and run.summary["summary/eval_s"] == 1.0
    assert run.summary["summary/steps"] == 12 and run.summary["summary/duration_s"] == 2.5
    assert run.config["seed"] == 3 and run.config["train"]["lr"] == 0.1 and run.config["params"] == {}
    assert run.flat_config()["train.lr"] == 0.1 and run.name.endswith(f"seed 3 [{result.config.run_id}]")


def test_tracked_run_of_a_tuning_run_logs_the_validation_split():
    evals = [{"step": i, "eval_exp": j, "metric": "accuracy", "split": "val", "value": 0.5, "n": 10}
             for i in range(3) for j in range(3)]
    result, entry = synthetic_result(evals, [cost(i) for i in range(3)], phase="tune", validation_split=0.2)
    run = trackers.tracked_run(result, entry)
    assert run.steps[2]["val_acc/exp1"] == 0.5 and not any(k.startswith("acc/") for k in run.steps[2])
    assert run.summary["summary_val/acc"] == 0.5 and "summary/acc" not in run.summary
    assert run.phase == "tune" and run.config["phase"] == "tune"


def test_a_failing_tracker_warns_and_the_command_goes_on(tmp_path, monkeypatch, capsys):
    class Broken:
        def __init__(self, out):
            self.closed = False

        def log(self, run):
            raise OSError("the tracker's disk is gone")

        def close(self):
            raise RuntimeError("and it will not close")

    monkeypatch.setitem(trackers.TRACKER_CLASSES, "tensorboard", Broken)
    monkeypatch.setattr(trackers, "_installed", lambda package: True)
    result, entry = synthetic_result([], [], status="failed")
    with trackers.Trackers(["tensorboard"], tmp_path) as group:
        group.log(result, entry)
    err = capsys.readouterr().err
    assert f"tracker tensorboard could not log run {result.config.run_id}: the tracker's disk is gone" in err
    assert "tracker tensorboard did not close cleanly: and it will not close" in err


def test_no_tracker_imports_nothing(tmp_path):
    group = trackers.Trackers([], tmp_path)
    assert not group
    group.log(None, {})  # nothing to log to: not even the run is read
    group.close()
    assert not list(tmp_path.iterdir())
