"""Ctrl-C or a scheduler's SIGTERM never cuts a write to the store in half.

The interrupt is raised from inside the SQL statement that writes a metric, so it lands in the middle of
MLflow's transaction, where an unguarded KeyboardInterrupt leaves SQLite's lock held by the process.
"""

import signal
from types import SimpleNamespace

import pytest
import sqlalchemy
from mlflow.entities import Metric

from ablations import tracking
from ablations.run_logger import RunLogger


@pytest.fixture
def interruptible():
    """SIGINT and SIGTERM raise KeyboardInterrupt, as `prepare_process` makes them in every entry point."""
    previous = {number: signal.signal(number, signal.default_int_handler) for number in (signal.SIGINT, signal.SIGTERM)}
    yield
    for number, handler in previous.items():
        signal.signal(number, handler)


def interrupt_inside_the_metric_insert(client: tracking.StoreClient, number: int) -> None:
    engine = client._tracking_client.store.engine
    fired = []

    def interrupt(conn, cursor, statement, *args) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO METRICS") and not fired:
            fired.append(statement)
            signal.raise_signal(number)

    sqlalchemy.event.listen(engine, "before_cursor_execute", interrupt)


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=lambda number: number.name)
def test_an_interrupt_inside_a_write_takes_effect_after_it_and_the_run_can_still_be_marked_killed(
    tmp_path, interruptible, number
):
    client = tracking.StoreClient(f"sqlite:///{tmp_path / 'store.db'}")
    run_id = client.create_run(client.create_experiment("interrupted")).info.run_id
    interrupt_inside_the_metric_insert(client, number)

    with pytest.raises(KeyboardInterrupt):
        client.log_batch(run_id, metrics=[Metric("loss", 2.5, 0, 10)])

    assert client.get_run(run_id).data.metrics == {"loss": 2.5}  # the write was whole, not rolled back
    client.set_terminated(run_id, "KILLED")  # an open transaction would make this wait 20 s, then fail
    assert client.get_run(run_id).info.status == "KILLED"


def test_the_training_logger_writes_through_the_same_guard(tmp_path, interruptible):
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    client = tracking.StoreClient(uri)
    run_id = client.create_run(client.create_experiment("interrupted")).info.run_id
    logger = RunLogger(tracking_uri=uri, run_id=run_id)
    interrupt_inside_the_metric_insert(logger.experiment, signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        logger.log_metrics({"train_loss": 3.0}, step=20)

    assert client.get_run(run_id).data.metrics == {"train_loss": 3.0}
    assert logger.unsent == []


def test_a_signal_ignored_before_the_write_stays_ignored(tmp_path):
    """A shell's background job ignores SIGINT; holding it during a write must not turn it into an interrupt."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with tracking.uninterrupted():
            signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_signal_inside_the_block_is_delivered_after_it_and_the_handlers_are_put_back(interruptible):
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with tracking.uninterrupted():
            with tracking.uninterrupted():  # nested: the inner block hands the signal to the outer one
                signal.raise_signal(signal.SIGINT)
                reached.append("inner")
            reached.append("outer")
    assert reached == ["inner", "outer"]
    assert signal.getsignal(signal.SIGINT) is signal.getsignal(signal.SIGTERM) is signal.default_int_handler


def test_interrupts_are_held_for_a_sqlite_store_only(tmp_path, interruptible):
    """A tracking server keeps its own transactions; a call retrying an unreachable one must stay interruptible,
    in the client and in the training logger alike."""
    assert tracking.StoreClient(f"sqlite:///{tmp_path / 'store.db'}").holds_interrupts
    assert not tracking.StoreClient("http://127.0.0.1:5000").holds_interrupts
    logger = RunLogger(tracking_uri="http://127.0.0.1:5000", run_id="r")
    during = []
    logger._mlflow_client.get_run = lambda run_id: SimpleNamespace(info=SimpleNamespace(experiment_id="0"))
    logger._mlflow_client.log_batch = lambda *args, **kwargs: during.append(signal.getsignal(signal.SIGINT))
    logger.log_metrics({"train_loss": 3.0}, step=1)
    assert during == [signal.default_int_handler]  # not held while talking to a server
