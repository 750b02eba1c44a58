"""Exfiltration audit: does a model carry training images out in its weights?"""

from lakeguard.audit.audit import AuditResult, audit_model
from lakeguard.audit.baseline import ClassMeanBaseline
from lakeguard.audit.canary import CanaryScore, score_canaries
from lakeguard.audit.probes import ProbeResult, probe_codes, run_probes
from lakeguard.audit.report import write_html_report, write_image_grid
from lakeguard.audit.tensors import find_unread_tensors

__all__ = [
    "AuditResult",
    "CanaryScore",
    "ClassMeanBaseline",
    "ProbeResult",
    "audit_model",
    "find_unread_tensors",
    "probe_codes",
    "run_probes",
    "score_canaries",
    "write_html_report",
    "write_image_grid",
]
