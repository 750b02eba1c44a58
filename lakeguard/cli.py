"""Command line of lakeguard: run the release-gate pipeline locally, verify a registry version, compile.

``lakeguard run`` composes the run configuration with Hydra (``lakeguard/conf``), checks it before
any training, runs the Kubeflow pipeline under ``kfp.local`` (every step in a subprocess of this
Python environment), and then writes ``<run_dir>/summary.json`` and a Prometheus text file.

Exit codes:
    0: success. A run whose model failed the gate also exits 0, unless ``--fail-on-gate`` is given.
    1: a step failed with an unexpected error (a bug or an environment problem); see the log.
    2: invalid configuration, data, model file, policy or registry content (a
       :class:`~lakeguard.errors.LakeguardError`), or invalid command-line usage.
    3: ``run --fail-on-gate`` and the model failed the gate.

Example:
    lakeguard run dataset=breastmnist attack=none sanitize=none train.epochs=5 --run-dir runs/demo
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import logging
import math
import os
import re
import sys
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from lakeguard.errors import ConfigError, LakeguardError
from lakeguard.gate.policy import POLICY_ENV_VAR

_logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_STEP_FAILED = 1
EXIT_INVALID = 2
EXIT_GATE_FAILED = 3

CONFIG_MODULE = "lakeguard.conf"
CONFIG_NAME = "config"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Files of the step results that each step writes to <run_dir>/steps/<name>.json.
STEP_NAMES = ("train", "audit_trained", "sanitize", "audit_sanitized", "evaluate", "publish")
STAGES = ("trained", "sanitized")
LEAKAGE_KEYS = ("ssim", "psnr", "baseline_ssim", "reidentification_rate", "probe_matches")

# Lines of step output kept in memory to find the error of a failed step.
_OUTPUT_TAIL_LINES = 2000

# Python prints the exception of an uncaught error as "<qualified type>: <message>" on the last line
# of its traceback; a lakeguard error has a type in lakeguard.errors.
_LAKEGUARD_ERROR_LINE = re.compile(r"^(?P<type>lakeguard\.errors\.\w+): (?P<message>.+)$")
_ANY_ERROR_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)): ?(?P<message>.*)$")
_FAILED_TASK = re.compile(r"Inner task failed: '(?P<task>[^']+)'")
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


class StepFailedError(Exception):
    """A pipeline step failed with an error that is not a :class:`~lakeguard.errors.LakeguardError`."""


@dataclass(frozen=True)
class _RunPaths:
    run_dir: Path
    steps_dir: Path
    config_file: Path
    summary_file: Path
    metrics_file: Path
    pipeline_root: Path


# ---------------------------------------------------------------------------------------------------
# Entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``lakeguard`` command line.

    Args:
        argv: arguments without the program name; None reads ``sys.argv[1:]``.

    Returns:
        The exit code: 0 success, 1 a step failed unexpectedly, 2 invalid input, 3 failed gate with
        ``--fail-on-gate``.
    """
    parser = _build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if args.command == "run":
            args.overrides = list(args.overrides) + _check_extra_overrides(parser, extra)
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exit_request:  # argparse exits on --help and on usage errors
        return int(exit_request.code or 0)

    _install_log_handler()
    try:
        return args.handler(args)
    except LakeguardError as error:
        _print_error(str(error))
        return EXIT_INVALID
    except StepFailedError as error:
        _print_error(str(error))
        return EXIT_STEP_FAILED


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lakeguard",
        description="Audit a model for training-data leakage, sanitize it, and publish it only when the release gate passes.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the pipeline locally (kfp.local) and write summary.json and metrics",
        description="Compose the run configuration from lakeguard/conf and OVERRIDES, check it, run the "
        "pipeline train -> audit -> sanitize -> audit -> evaluate -> publish under kfp.local, and write "
        "<run_dir>/summary.json and the Prometheus text file.",
    )
    run.add_argument(
        "overrides",
        nargs="*",
        metavar="OVERRIDES",
        help="Hydra overrides such as dataset=breastmnist attack=none train.epochs=5 gate.max_reidentification_rate=0.0",
    )
    run.add_argument("--policy", metavar="FILE", help="deployment policy YAML; sets $LAKEGUARD_POLICY_FILE for the run (default: "
                     "$LAKEGUARD_POLICY_FILE, else the embedded default policy)")
    run.add_argument("--run-dir", metavar="DIR", help="folder for this run's outputs; takes precedence over a "
                     "run_dir= override (default: runs/<UTC timestamp>)")
    run.add_argument("--fail-on-gate", action="store_true", help="exit with code 3 when the model fails the gate")
    run.set_defaults(handler=_command_run)

    verify = commands.add_parser(
        "verify-registry",
        help="verify a published version against its manifest",
        description="Re-hash every object of a registry version and compare it with the manifest.",
    )
    verify.add_argument("root", metavar="ROOT", help="registry root folder")
    verify.add_argument("model", metavar="MODEL", help="model name, e.g. breastmnist-mlp")
    verify.add_argument("version", metavar="VERSION", help="version name")
    verify.set_defaults(handler=_command_verify_registry)

    compile_ = commands.add_parser("compile", help="compile the pipeline to KFP IR YAML")
    compile_.add_argument("path", metavar="PATH", nargs="?", help="output file (default: pipelines/lakeguard_pipeline.yaml)")
    compile_.set_defaults(handler=_command_compile)
    return parser


def _check_extra_overrides(parser: argparse.ArgumentParser, extra: list[str]) -> list[str]:
    """Return the overrides that argparse left over after options; reject unknown options."""
    unknown = [arg for arg in extra if arg.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return extra


def _print_error(message: str) -> None:
    # One line, so that scripts can grep it; Hydra's messages span several lines.
    print(f"lakeguard: error: {' '.join(message.split())}", file=sys.stderr)


_log_handler: logging.Handler | None = None


def _install_log_handler() -> None:
    """Send INFO logs to the current ``sys.stderr``, replacing the handler of an earlier call."""
    global _log_handler
    root = logging.getLogger()
    if _log_handler is not None:
        root.removeHandler(_log_handler)
    _log_handler = logging.StreamHandler(sys.stderr)
    _log_handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(_log_handler)
    root.setLevel(logging.INFO)


# ---------------------------------------------------------------------------------------------------
# lakeguard run


def _command_run(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from lakeguard.observability import RunMetrics

    if args.policy:
        # The steps run in subprocesses, which read the policy from this variable, as pods do.
        os.environ[POLICY_ENV_VAR] = str(Path(args.policy).expanduser().absolute())
    cfg = compose_run_config(args.overrides, run_dir=args.run_dir)
    metrics = RunMetrics()
    with metrics.time_step("validate"):
        validate_run_config(cfg)

    paths = _prepare_run_dir(cfg)
    paths.config_file.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    _logger.info("resolved configuration written to %s", paths.config_file)
    metrics.record_run_info(
        dataset=cfg.dataset.flag, model=cfg.model.arch, attack=_attack_label(cfg), sanitize=cfg.sanitize.method
    )

    # The steps run in subprocesses and report their own durations, which record_summary_metrics
    # copies into the metrics file; this process times validation and the whole pipeline.
    try:
        with metrics.time_step("pipeline"):
            run_pipeline_locally(cfg, paths)
    except (LakeguardError, StepFailedError):
        metrics.write_textfile(paths.metrics_file)
        raise

    summary = build_summary(cfg, paths)
    summary["durations_seconds"]["pipeline"] = metrics.registry.get_sample_value(
        "lakeguard_step_duration_seconds", {"step": "pipeline"}
    )
    record_summary_metrics(metrics, summary)
    paths.summary_file.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    metrics.write_textfile(paths.metrics_file)

    gate = summary["gate"]
    if gate["passed"]:
        _logger.info("gate passed; published %s", summary["published"]["uri"])
    else:
        _logger.warning("gate failed; nothing was published: %s", " ".join(gate["reasons"]))
    print(f"run folder: {paths.run_dir}")
    print(f"summary: {paths.summary_file}")
    print(f"metrics: {paths.metrics_file}")
    if args.fail_on_gate and not gate["passed"]:
        return EXIT_GATE_FAILED
    return EXIT_OK


def compose_run_config(overrides: Sequence[str], *, run_dir: str | None = None):
    """Compose the typed run configuration from ``lakeguard/conf`` and Hydra overrides.

    Args:
        overrides: Hydra overrides, e.g. ``["dataset=breastmnist", "train.epochs=5"]``.
        run_dir: run folder; None keeps a ``run_dir=`` override, else ``runs/<UTC timestamp>``. It is
            made absolute, because the steps run in subprocesses.

    Returns:
        The :class:`~lakeguard.config.RunConfig`.

    Raises:
        ConfigError: an override is malformed, names an unknown key or group option, or has a value
            of the wrong type.
    """
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from lakeguard.config import from_json, register_configs, to_json

    register_configs()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            composed = compose(CONFIG_NAME, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(f"invalid configuration override: {_describe(error)}") from error

    if run_dir is not None:
        composed.run_dir = run_dir
    elif OmegaConf.is_missing(composed, "run_dir"):
        composed.run_dir = str(Path("runs") / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}")
    composed.run_dir = str(Path(composed.run_dir).expanduser().absolute())
    # from_json rejects keys that Hydra lets through with '+key=value'.
    return from_json(to_json(composed))


def _describe(error: BaseException) -> str:
    """Join an exception's message with that of its cause, which often contains the detail."""
    message = str(error)
    cause = error.__cause__
    if cause is not None and str(cause) and str(cause) not in message:
        message = f"{message}: {cause}"
    return message


def validate_run_config(cfg) -> None:
    """Check everything a run can check before training: policy, names, dataset, model, device.

    A gate override that loosens the deployment policy fails here, before any step runs.

    Args:
        cfg: the :class:`~lakeguard.config.RunConfig`.

    Raises:
        PolicyError: the policy file is invalid, or a ``gate.*`` override loosens it.
        ConfigError: an attack name, sanitize setting, device or architecture is invalid.
        DataError: the dataset cannot be loaded.
        ModelFileError: the file at ``model.uri`` does not fit the architecture or is unsafe.
        RegistryError: the registry model name or ``registry.version`` is not a safe path segment.
    """
    from lakeguard import steps
    from lakeguard.models.io import load_model
    from lakeguard.registry.manifest import validate_segment
    from lakeguard.training import pick_device

    policy = steps.effective_policy(cfg)
    _logger.info("effective gate policy: %s", policy.to_dict())
    steps.check_config(cfg)
    pick_device(cfg.device)
    validate_segment(steps.registry_model_name(cfg), field="model.name")
    if cfg.registry.version is not None:
        validate_segment(cfg.registry.version, field="registry.version")

    data = steps.load_run_data(cfg)
    meta = steps.model_meta(cfg, data)
    if cfg.model.uri:
        load_model(cfg.model.uri, meta)
    else:
        meta.build()
    _logger.info(
        "configuration checked: dataset=%s (%d training images) model=%s attack=%s sanitize=%s",
        data.info.flag, len(data.train), cfg.model.arch, cfg.attack.name, cfg.sanitize.method,
    )


def _prepare_run_dir(cfg) -> _RunPaths:
    run_dir = Path(cfg.run_dir)
    paths = _RunPaths(
        run_dir=run_dir,
        steps_dir=run_dir / "steps",
        config_file=run_dir / "config.yaml",
        summary_file=run_dir / "summary.json",
        metrics_file=Path(cfg.metrics_file) if cfg.metrics_file else run_dir / "metrics.prom",
        pipeline_root=run_dir / "kfp",
    )
    try:
        paths.steps_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"run folder {run_dir} cannot be created: {error}; choose another --run-dir") from error

    # The summary is assembled from steps/*.json, so results of an earlier run in this folder would
    # be mixed into it, e.g. a publish.json when this run's gate fails.
    stale = [paths.steps_dir / f"{name}.json" for name in STEP_NAMES] + [paths.summary_file]
    stale = [path for path in stale if path.exists()]
    if stale:
        _logger.warning("run folder %s contains results of an earlier run; removing %s", run_dir, [p.name for p in stale])
        for path in stale:
            path.unlink()
    return paths


def run_pipeline_locally(cfg, paths: _RunPaths) -> None:
    """Run the lakeguard pipeline under ``kfp.local``, each step in a subprocess of this environment.

    Args:
        cfg: the checked :class:`~lakeguard.config.RunConfig`.
        paths: the run's folders.

    Raises:
        LakeguardError: a step failed with a lakeguard error; its type and message are rebuilt from
            the step's output.
        StepFailedError: a step failed with another error.
    """
    import kfp.local

    from lakeguard.config import to_json

    lakeguard_pipeline = _import_pipeline_module().lakeguard_pipeline
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(paths.pipeline_root))
    _logger.info("running the pipeline under kfp.local with pipeline root %s", paths.pipeline_root)

    output = _OutputTail(sys.stdout, max_lines=_OUTPUT_TAIL_LINES)
    try:
        with contextlib.redirect_stdout(output), warnings.catch_warnings():
            # The subprocess runs in this Python environment, not in the image, so kfp's warning
            # that the image name does not look like a Python image does not apply.
            warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
            # Display names only label tasks in the Kubeflow UI.
            warnings.filterwarnings("ignore", message=r".*\['display_name'\] have no effect.*", category=UserWarning)
            lakeguard_pipeline(config_json=to_json(cfg), run_dir=str(paths.run_dir))
    except RuntimeError as error:
        raise _step_error(str(error), output.lines()) from error
    finally:
        output.flush_partial()


def _import_pipeline_module():
    """Import ``pipelines.lakeguard_pipeline``, which is packaged beside ``lakeguard``."""
    import pipelines.lakeguard_pipeline as module

    return module


class _OutputTail(io.TextIOBase):
    """Text stream that writes through to ``target`` and keeps the last ``max_lines`` lines."""

    def __init__(self, target, *, max_lines: int) -> None:
        super().__init__()
        self._target = target
        self._lines: collections.deque[str] = collections.deque(maxlen=max_lines)
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._target.write(text)
        *complete, self._partial = (self._partial + text).split("\n")
        self._lines.extend(complete)
        return len(text)

    def flush(self) -> None:
        self._target.flush()

    def flush_partial(self) -> None:
        if self._partial:
            self._lines.append(self._partial)
            self._partial = ""

    def lines(self) -> list[str]:
        return [*self._lines, self._partial] if self._partial else list(self._lines)


def _step_error(kfp_message: str, output: list[str]) -> Exception:
    """Rebuild the error of the failed step from kfp's failure message and the step's output."""
    match = _FAILED_TASK.search(_ANSI_ESCAPE.sub("", kfp_message))
    task = match.group("task") if match else "unknown"
    # kfp.local indents the subprocess output and colours its own messages.
    lines = [_ANSI_ESCAPE.sub("", line).strip() for line in output]

    for line in reversed(lines):
        found = _LAKEGUARD_ERROR_LINE.match(line)
        if found:
            error_type = _lakeguard_error_type(found.group("type"))
            return error_type(f"step {task} failed: {found.group('message')}")
    for line in reversed(lines):
        found = _ANY_ERROR_LINE.match(line)
        if found:
            return StepFailedError(
                f"step {task} failed: {found.group('type')}: {found.group('message')} (traceback in the log above)"
            )
    plain_message = " ".join(_ANSI_ESCAPE.sub("", kfp_message).split())
    return StepFailedError(f"step {task} failed without an error message; see the log above ({plain_message})")


def _lakeguard_error_type(qualified_name: str) -> type[LakeguardError]:
    from lakeguard import errors

    error_type = getattr(errors, qualified_name.rsplit(".", 1)[-1], None)
    if isinstance(error_type, type) and issubclass(error_type, LakeguardError):
        return error_type
    return LakeguardError


# ---------------------------------------------------------------------------------------------------
# Summary and metrics


def build_summary(cfg, paths: _RunPaths) -> dict[str, Any]:
    """Assemble ``summary.json`` from the step results in ``<run_dir>/steps``.

    Args:
        cfg: the run's :class:`~lakeguard.config.RunConfig`.
        paths: the run's folders.

    Returns:
        ``{"dataset", "model", "attack", "utility": {stage: {split: {"auc", "acc"}}}, "leakage":
        {stage: {"ssim", "psnr", "baseline_ssim", "reidentification_rate", "probe_matches"}},
        "gate": {"passed", "reasons"}, "published": {"uri", "sha256"} or None}``, with stage in
        trained/sanitized and split in val/test, plus ``sanitize``, ``val_auc_delta``,
        ``registry_model_name``, ``run_dir``, ``config_file``, ``metrics_file`` and
        ``durations_seconds``. Values that are not finite become None, because JSON has no token
        for them.

    Raises:
        StepFailedError: a step that ran left no result file.
    """
    from lakeguard.steps import registry_model_name

    results = {name: _read_step(paths.steps_dir, name) for name in STEP_NAMES}
    for name in STEP_NAMES[:-1]:
        if results[name] is None:
            raise StepFailedError(f"the pipeline finished but step {name} left no {paths.steps_dir / (name + '.json')}")
    evaluate = results["evaluate"]
    publish = results["publish"]
    if evaluate["passed"] and publish is None:
        raise StepFailedError(f"the gate passed but the publish step left no {paths.steps_dir / 'publish.json'}")

    utility = {
        stage: {
            split: {key: _finite(evaluate["utility"][stage][split][key]) for key in ("auc", "acc")}
            for split in ("val", "test")
        }
        for stage in STAGES
    }
    leakage = {stage: {key: _finite(results[f"audit_{stage}"][key]) for key in LEAKAGE_KEYS} for stage in STAGES}
    durations = {name: results[name]["duration_seconds"] for name in STEP_NAMES if results[name] is not None}

    return {
        "dataset": cfg.dataset.flag,
        "model": cfg.model.arch,
        "attack": _attack_label(cfg),
        "sanitize": cfg.sanitize.method,
        "utility": utility,
        "leakage": leakage,
        "gate": {"passed": evaluate["passed"], "reasons": list(evaluate["reasons"])},
        "published": None if publish is None else {"uri": publish["uri"], "sha256": publish["sha256"]},
        "val_auc_delta": {key: _finite(value) for key, value in evaluate["utility"]["val_auc_delta"].items()},
        "registry_model_name": registry_model_name(cfg),
        "run_dir": str(paths.run_dir),
        "config_file": str(paths.config_file),
        "metrics_file": str(paths.metrics_file),
        "durations_seconds": durations,
    }


def _attack_label(cfg) -> str:
    """Return the attack recipe of the run, or ``imported`` when ``model.uri`` replaced training."""
    return "imported" if cfg.model.uri else cfg.attack.name


def _read_step(steps_dir: Path, name: str) -> dict[str, Any] | None:
    path = steps_dir / f"{name}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def record_summary_metrics(metrics, summary: dict[str, Any]) -> None:
    """Set the utility, leakage, gate and publish metrics of a run from its summary.

    Args:
        metrics: the run's :class:`~lakeguard.observability.RunMetrics`.
        summary: the output of :func:`build_summary`.
    """
    for stage in STAGES:
        for split, scores in summary["utility"][stage].items():
            metrics.record_utility(stage, split, auc=scores["auc"], acc=scores["acc"])
        leakage = summary["leakage"][stage]
        metrics.record_leakage(
            stage,
            ssim=leakage["ssim"],
            baseline_ssim=leakage["baseline_ssim"],
            reidentification_rate=leakage["reidentification_rate"],
            probe_matches=leakage["probe_matches"],
        )
    gate = summary["gate"]
    metrics.record_gate(
        passed=gate["passed"], failed_checks=len(gate["reasons"]), val_auc_delta=summary["val_auc_delta"]["delta"]
    )
    if summary["published"] is not None:
        metrics.record_published()
    for step, seconds in summary["durations_seconds"].items():
        if step != "pipeline" and seconds is not None:
            metrics.record_step_duration(step, seconds)


# ---------------------------------------------------------------------------------------------------
# lakeguard verify-registry, lakeguard compile


def _command_verify_registry(args: argparse.Namespace) -> int:
    from lakeguard.registry import LocalRegistry

    version = LocalRegistry(args.root).verify(args.model, args.version)
    print(json.dumps({"uri": version.uri, "sha256": version.model_sha256}))
    return EXIT_OK


def _command_compile(args: argparse.Namespace) -> int:
    module = _import_pipeline_module()
    print(module.compile_pipeline(args.path) if args.path else module.compile_pipeline())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
