"""Release gate: the deployment's policy, the decision on a sanitized model, and its gate record."""

from lakeguard.gate._hashing import sha256_file
from lakeguard.gate.decision import (
    RECORD_SCHEMA,
    GateDecision,
    GateInputs,
    GateRecord,
    LeakageEvidence,
    build_record,
    decide,
    read_record,
    verify_record,
    write_record,
)
from lakeguard.gate.policy import (
    AUC_DELTA_STATISTICS,
    POLICY_ENV_VAR,
    Policy,
    check_not_looser,
    load_policy,
    policy_from_mapping,
    strictest,
    tighten,
)

__all__ = [
    "AUC_DELTA_STATISTICS",
    "POLICY_ENV_VAR",
    "RECORD_SCHEMA",
    "GateDecision",
    "GateInputs",
    "GateRecord",
    "LeakageEvidence",
    "Policy",
    "build_record",
    "check_not_looser",
    "decide",
    "load_policy",
    "policy_from_mapping",
    "read_record",
    "sha256_file",
    "strictest",
    "tighten",
    "verify_record",
    "write_record",
]
