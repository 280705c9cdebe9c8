"""Lightning's MLflow logger for a run that the suite opened and will end itself (ablations.run).

Apart from ablations.tracking so that reading the store (results, the report) does not import Lightning.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only

from ablations.tracking import StoreClient, TrackingServerError, uninterrupted


class RunLogger(MLFlowLogger):
    """Lightning's MLFlowLogger writing into a run the suite created and will end itself.

    Lightning would mark the run FINISHED as soon as `fit` returns; the suite ends it only once its
    final metrics are in, so a run interrupted in between never looks finished.

    A tracking server that stops answering mid-run (after MLflow's own HTTP retries) does not lose
    metrics: they are kept and sent with the next batch that goes through, with one warning.
    `flush()` at the end of the run sends what is left, or saves it to a local JSON file and raises.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._mlflow_client = StoreClient(self._tracking_uri)  # Lightning's own client, made interrupt-safe
        self.unsent: list[Metric] = []

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        self.unsent += [Metric(key, float(value), now, step or 0) for key, value in metrics.items()]
        try:
            self._send()
        except (MlflowException, OSError) as err:
            if len(self.unsent) == len(metrics):  # the first failure of a streak
                warnings.warn(f"tracking server unreachable ({err}); buffering metrics until it answers", stacklevel=2)

    def _send(self) -> None:
        while self.unsent:
            # a batch that reached the store leaves the buffer in the same step, or it would be sent twice
            with uninterrupted(self._mlflow_client.holds_interrupts):
                self.experiment.log_batch(self.run_id, metrics=self.unsent[:1000])  # MLflow's batch limit
                del self.unsent[:1000]

    def flush(self, spill_dir: Path) -> None:
        """Send the buffered metrics; if the server still does not answer, save them and raise."""
        try:
            self._send()
        except (MlflowException, OSError) as err:
            spill_dir.mkdir(parents=True, exist_ok=True)
            path = spill_dir / f"{self.run_id}.json"
            path.write_text(json.dumps([m.to_dictionary() for m in self.unsent]))
            raise TrackingServerError(
                f"the tracking server stopped answering ({err}); {len(self.unsent)} metrics of run "
                f"{self.run_id} were saved to {path}"
            ) from None

    def finalize(self, status: str = "success") -> None:
        pass
