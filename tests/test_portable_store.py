"""The committed MLflow store works from any folder: its artifacts are addressed relative to itself."""

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from ablations import store
from ablations.tracking import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "smoke_results"


def locations(database: Path) -> list[str]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        return [row[0] for row in connection.execute("SELECT artifact_location FROM experiments")] + [
            row[0] for row in connection.execute("SELECT artifact_uri FROM runs")
        ]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with the sha256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_the_committed_store_names_its_artifacts_relative_to_itself():
    found = locations(store.DATABASE)
    assert found and all(uri.startswith(f"{store.SCHEME}:") for uri in found), {
        uri for uri in found if not uri.startswith(f"{store.SCHEME}:")
    }


def test_the_committed_store_holds_no_absolute_path_of_the_machine_that_made_it():
    with sqlite3.connect(f"file:{store.DATABASE}?mode=ro", uri=True) as connection:
        for table in ("params", "tags", "experiment_tags"):
            found = connection.execute(
                f"SELECT key, value FROM {table} WHERE value LIKE '/%' OR value LIKE ?", (f"%{ROOT}%",)
            ).fetchall()
            assert not found, (table, found[:5])


def test_a_store_of_an_older_version_is_made_portable_once(tmp_path):
    database = tmp_path / "mlflow.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE experiments (name TEXT, artifact_location TEXT)")
        connection.execute("CREATE TABLE runs (artifact_uri TEXT)")
        connection.execute("INSERT INTO experiments VALUES ('Default', '/home/a/project/mlruns/0')")
        connection.execute("INSERT INTO experiments VALUES ('e', 'file:///home/a/project/mlruns/artifacts/e')")
        connection.execute("INSERT INTO runs VALUES ('file:///home/a/project/mlruns/artifacts/e/r1/artifacts')")
        connection.execute("INSERT INTO runs VALUES ('ablations-store:artifacts/e/r2/artifacts')")
        connection.execute("CREATE TABLE params (run_uuid TEXT, key TEXT, value TEXT)")
        corpus = str(ROOT.parent / "data" / "input.txt")
        connection.execute("INSERT INTO params VALUES ('r1', 'data.path', ?)", (corpus,))
        connection.execute("INSERT INTO params VALUES ('r1', 'data.corpus', '/not/a/path/key')")
        connection.execute("INSERT INTO params VALUES ('r2', 'data.path', '../data/input.txt')")
    assert store.make_portable(database) == 4
    assert store.make_portable(database) == 0
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT run_uuid, key, value FROM params ORDER BY run_uuid, key").fetchall() == [
            ("r1", "data.corpus", "/not/a/path/key"), ("r1", "data.path", "../data/input.txt"),
            ("r2", "data.path", "../data/input.txt")]  # fmt: skip
    assert locations(database) == [
        "ablations-store:0",
        "ablations-store:artifacts/e",
        "ablations-store:artifacts/e/r1/artifacts",
        "ablations-store:artifacts/e/r2/artifacts",
    ]


def test_a_copy_in_another_folder_writes_its_runs_and_report_inside_itself_and_nothing_in_the_original(
    tmp_path, cache_dir
):
    clone = tmp_path / "elsewhere" / "project"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in tracked.splitlines():
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    shutil.copytree(ROOT / "conf", clone / "conf", symlinks=True, dirs_exist_ok=True)  # conf/experiment is a link
    before = snapshot(ROOT / "mlruns") | {f"reports/{k}": v for k, v in snapshot(ROOT / "reports").items()}
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the copy's own store
    env |= {"PYTHONPATH": str(clone / "src"), "ABLATIONS_CACHE": cache_dir}
    commands = [
        ["-m", "ablations", "experiment=label_smoothing", "tier=smoke", "seeds=1", "threads=1"],
        ["-m", "ablations.report", f"results={FIXTURE}", "tiers=smoke", f"out={clone / 'r.pdf'}"],
    ]
    for command in commands:
        result = subprocess.run([sys.executable, *command], cwd=clone, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]

    client = MlflowClient(f"sqlite:///{clone / 'mlruns' / 'mlflow.db'}")
    committed = run_ids(store.DATABASE)
    new_runs = [
        run
        for name in ("label_smoothing", "evidence_report")
        for run in client.search_runs([client.get_experiment_by_name(name).experiment_id])
        if run.info.run_id not in committed
    ]
    assert len(new_runs) == 1 + 3 + 1  # the parent, three arms, the report
    expected = {"experiment": {"verdicts.json", "label_smoothing.png"}, "report": {"r.pdf", "results/runs.csv"}}
    for run in new_runs:
        assert run.info.artifact_uri.startswith(f"{store.SCHEME}:artifacts/")
        # (this process's own ablations-store repository is the original checkout's: look at the files directly)
        artifacts = clone / "mlruns" / run.info.artifact_uri.removeprefix(f"{store.SCHEME}:")
        written = {str(p.relative_to(artifacts)) for p in artifacts.rglob("*") if p.is_file()}
        assert expected.get(run.data.tags["ablations.role"], set()) <= written
    assert all(uri.startswith(f"{store.SCHEME}:") for uri in locations(clone / "mlruns" / "mlflow.db"))
    after = snapshot(ROOT / "mlruns") | {f"reports/{k}": v for k, v in snapshot(ROOT / "reports").items()}
    assert after == before  # nothing appeared in, or changed in, the checkout the copy was made from


def run_ids(database: Path) -> set[str]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        return {row[0] for row in connection.execute("SELECT run_uuid FROM runs")}
