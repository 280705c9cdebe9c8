"""The project's own MLflow store (mlruns/ of this clone) and where it keeps its artifacts.

MLflow records an artifact location per experiment and run. A plain local path would be the absolute
path of the machine that made the run, so a clone in another folder would read and write artifacts in
a folder that is not its own. The project's store therefore addresses its artifacts relative to its
own folder, as ``ablations-store:artifacts/<experiment>/...``, and this module's artifact repository
(registered with MLflow under that scheme by the package's entry points, so the UI resolves it too)
reads and writes them inside the clone it is imported from. Nothing here imports torch: the MLflow UI
loads this module.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
STORE_DIR = ROOT / "mlruns"
DATABASE = STORE_DIR / "mlflow.db"
SCHEME = "ablations-store"
# What older versions wrote: [file://]<that machine's project folder>/mlruns/<the rest>
LEGACY_MARKER = "/mlruns/"


def artifact_location(experiment: str) -> str:
    """The artifact location of an experiment of the project's store, relative to the store."""
    return f"{SCHEME}:artifacts/{experiment}"


def local_path(uri: str) -> Path:
    """Where an ``ablations-store:`` URI lies in this clone."""
    return STORE_DIR / uri.removeprefix(f"{SCHEME}:").lstrip("/")


def __getattr__(name: str) -> Any:
    """StoreArtifactRepository, defined on first use: importing MLflow's artifact module here at import time
    would make MLflow load this module's entry point while it is still half imported."""
    if name != "StoreArtifactRepository":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    class StoreArtifactRepository(LocalArtifactRepository):
        """The artifacts of the project's store, under mlruns/ of the clone this package is imported from."""

        def __init__(self, artifact_uri: str, *args: Any, **kwargs: Any):
            super().__init__(local_path(artifact_uri).as_uri(), *args, **kwargs)

    globals()[name] = StoreArtifactRepository
    return StoreArtifactRepository


CORPUS_PATH_PARAMS = ("data.path", "data.domain_path")


def _relative_corpus_paths(connection: sqlite3.Connection) -> int:
    """Older versions logged corpus paths as this machine's absolute paths: rewrite them relative to the project,
    as runs log them now (ablations.run.run_params)."""
    if not connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'params'").fetchone():
        return 0
    found = connection.execute(
        f"SELECT run_uuid, key, value FROM params WHERE key IN ({', '.join('?' * len(CORPUS_PATH_PARAMS))}) "  # noqa: S608
        "AND value LIKE '/%'",
        CORPUS_PATH_PARAMS,
    ).fetchall()
    for run, key, value in found:
        connection.execute(
            "UPDATE params SET value = ? WHERE run_uuid = ? AND key = ?", (os.path.relpath(value, ROOT), run, key)
        )
    return len(found)


def make_portable(database: Path = DATABASE) -> int:
    """Rewrite the absolute paths of older versions (artifact locations, corpus paths) as relative ones; the number
    rewritten.

    Idempotent, and a no-op (no write lock taken) when there is nothing to rewrite.
    """
    if not database.exists():
        return 0
    pattern = f"%{LEGACY_MARKER}%"
    columns = {"experiments": "artifact_location", "runs": "artifact_uri"}
    with closing(sqlite3.connect(database, timeout=60)) as connection, connection:
        counts = {
            table: connection.execute(
                f"SELECT count(*) FROM {table} WHERE {column} LIKE ? AND {column} NOT LIKE ?",  # noqa: S608
                (pattern, f"{SCHEME}:%"),
            ).fetchone()[0]
            for table, column in columns.items()
        }
        for table, column in columns.items():
            if counts[table]:
                connection.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, instr({column}, ?) + ?) "  # noqa: S608
                    f"WHERE {column} LIKE ? AND {column} NOT LIKE ?",
                    (f"{SCHEME}:", LEGACY_MARKER, len(LEGACY_MARKER), pattern, f"{SCHEME}:%"),
                )
        paths = _relative_corpus_paths(connection)
    return sum(counts.values()) + paths
