"""Run metrics in the Prometheus text format, for the textfile collector or a Pushgateway."""

from lakeguard.observability.metrics import (
    DEFAULT_PUSH_TIMEOUT_S,
    SPLITS,
    STAGES,
    RunMetrics,
    load_textfile_metrics,
)

__all__ = ["DEFAULT_PUSH_TIMEOUT_S", "SPLITS", "STAGES", "RunMetrics", "load_textfile_metrics"]
