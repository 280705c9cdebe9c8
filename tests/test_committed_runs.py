"""Every finished run committed in the project's store at the current numerics version is found again by the
current code: its key is among the keys that its experiment file plans today for its tier and corpus.

A setting that leaked into every key (a new one missing from ablations.numerics.ADDED_SETTINGS), or an edit of
an experiment file that changed an arm already run, fails here, before a user's `make experiment` retrains
hours of committed evidence.
"""

import sqlite3
from collections import defaultdict

import pytest
from hydra import compose, initialize_config_dir

from ablations.numerics import NUMERICS_VERSION
from ablations.plan import invocation
from ablations.run import resolve
from ablations.store import DATABASE, ROOT

LOADABLE = ("stdlib_prose", "stdlib_code")  # built from the running Python; other corpora need a download


def committed_keys() -> dict[tuple[str, str, str], set[str]]:
    """(experiment, tier, corpus) -> the run keys of the store's finished arm runs at NUMERICS_VERSION."""
    with sqlite3.connect(f"file:{DATABASE}?mode=ro", uri=True) as db:
        rows = db.execute(
            """SELECT MAX(CASE WHEN t.key = 'experiment' THEN t.value END),
                      MAX(CASE WHEN t.key = 'tier' THEN t.value END),
                      MAX(CASE WHEN t.key = 'corpus' THEN t.value END),
                      MAX(CASE WHEN t.key = 'ablations.run_key' THEN t.value END)
               FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid
               WHERE r.status = 'FINISHED' AND r.run_uuid IN
                 (SELECT run_uuid FROM tags WHERE key = 'code_version' AND value = ?)
                 AND r.run_uuid IN (SELECT run_uuid FROM tags WHERE key = 'ablations.role' AND value = 'arm')
               GROUP BY r.run_uuid""",
            (NUMERICS_VERSION,),
        ).fetchall()
    keys = defaultdict(set)
    for experiment, tier, corpus, key in rows:
        keys[experiment, tier, corpus].add(key)
    return dict(keys)


COMMITTED = committed_keys()


def planned_keys(experiment: str, tier: str, corpus: str) -> set[str]:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", [f"experiment={experiment}", f"tier={tier}", f"data={corpus}"])
    job = invocation(cfg)
    keys, base_keys = set(), {}
    for run_cfg in job.run_cfgs:  # as ablations.experiment runs them: bases first, every other arm from its base
        if (base := job.spec.base_arm(run_cfg.arm)) is not None:
            run_cfg.init_from = base_keys[base, run_cfg.seed]
        key = resolve(run_cfg).key
        if job.spec.base is not None and base is None:
            base_keys[run_cfg.arm, run_cfg.seed] = key
        keys.add(key)
    return keys


def test_the_store_holds_runs_of_the_current_numerics_version():
    assert COMMITTED, f"no finished run at numerics version {NUMERICS_VERSION} in {DATABASE}"


@pytest.mark.parametrize("group", sorted(COMMITTED), ids="-".join)
def test_every_committed_run_is_reused_by_the_current_code(group):
    experiment, tier, corpus = group
    if corpus not in LOADABLE:
        pytest.skip(f"{corpus} must be downloaded to be keyed; the stdlib corpora are checked")
    stale = COMMITTED[group] - planned_keys(experiment, tier, corpus)
    assert not stale, f"{len(stale)} of {len(COMMITTED[group])} committed runs would be trained again"
