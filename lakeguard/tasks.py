"""Task types of MedMNIST classification datasets.

The values are the strings of the ``task`` field in ``medmnist.INFO`` (medmnist 3.0.2), so a task
can be read from that table directly.
"""

from enum import Enum


class Task(str, Enum):
    """Label structure of a dataset, which fixes the loss, the scores and the metrics."""

    BINARY = "binary-class"
    MULTI_CLASS = "multi-class"
    # Ordinal grades (RetinaMNIST) are scored as multi-class, as MedMNIST's own evaluator does.
    ORDINAL = "ordinal-regression"
    MULTI_LABEL = "multi-label, binary-class"

    @property
    def is_multi_label(self) -> bool:
        return self is Task.MULTI_LABEL
