"""The lakeguard release-gate pipeline: train, audit, sanitize, audit again, evaluate, publish.

The pipeline only wires the components of :mod:`components.lakeguard_components`. Publishing runs
only when the gate passed, and the publish step verifies the gate record once more before writing
to the registry.

Regenerate the committed IR after any change to the pipeline or its components::

    python -m pipelines.lakeguard_pipeline            # writes pipelines/lakeguard_pipeline.yaml
    python -m pipelines.lakeguard_pipeline OTHER.yaml
"""

import os
import sys
from pathlib import Path

from kfp import compiler, dsl

from components.lakeguard_components import attack_audit, evaluate, llrd_sanitize, publish, train

PIPELINE_NAME = "lakeguard"
COMPILED_PATH = Path(__file__).with_name("lakeguard_pipeline.yaml")
"""The committed IR that CI compares a fresh compile with."""


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Audit a model for training-data leakage, sanitize it by layer-wise learning-rate decay, "
    "and publish it only when the release gate passes.",
)
def lakeguard_pipeline(config_json: str, run_dir: str = ""):
    """Wire the five lakeguard steps.

    Caching stays on for train and llrd_sanitize, whose outputs follow from their inputs. It is off
    for both audits, evaluate and publish, because the policy file and the registry they read live
    outside their inputs: a cached result could pass a model under an old policy or skip a publish.

    Args:
        config_json: the resolved run configuration, from :func:`lakeguard.config.to_json`.
        run_dir: folder where every step writes ``steps/<name>.json``; empty keeps the
            configuration's ``run_dir``.
    """
    # NOTE: with model.uri set, train copies that file. A cached train result is reused while
    # config_json is unchanged, even if the file at model.uri was replaced; change the path to re-import.
    train_task = train(config_json=config_json, run_dir=run_dir).set_caching_options(True)

    trained_audit_task = attack_audit(
        config_json=config_json,
        run_dir=run_dir,
        stage="trained",
        model=train_task.outputs["model"],
        canaries=train_task.outputs["canaries"],
    )
    trained_audit_task.set_display_name("audit-trained").set_caching_options(False)

    sanitize_task = llrd_sanitize(
        config_json=config_json, run_dir=run_dir, model=train_task.outputs["model"]
    ).set_caching_options(True)

    sanitized_audit_task = attack_audit(
        config_json=config_json,
        run_dir=run_dir,
        stage="sanitized",
        model=sanitize_task.outputs["sanitized_model"],
        canaries=train_task.outputs["canaries"],
    )
    sanitized_audit_task.set_display_name("audit-sanitized").set_caching_options(False)

    evaluate_task = evaluate(
        config_json=config_json,
        run_dir=run_dir,
        trained_model=train_task.outputs["model"],
        sanitized_model=sanitize_task.outputs["sanitized_model"],
        sanitized_audit=sanitized_audit_task.outputs["audit"],
    ).set_caching_options(False)

    # NOTE: the gate decision is evaluate's unnamed return value (key "Output"), because kfp.local
    # 2.17.3 cannot resolve a named output parameter in a dsl.If condition and evaluates it as false.
    with dsl.If(evaluate_task.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 (KFP builds a condition)
        publish(
            config_json=config_json,
            run_dir=run_dir,
            sanitized_model=sanitize_task.outputs["sanitized_model"],
            gate_record=evaluate_task.outputs["gate_record"],
            sanitized_audit=sanitized_audit_task.outputs["audit"],
            utility=evaluate_task.outputs["utility"],
        ).set_caching_options(False)


def compile_pipeline(path: str | os.PathLike = COMPILED_PATH) -> Path:
    """Compile :func:`lakeguard_pipeline` to KFP IR YAML.

    Args:
        path: output file; the default is the committed ``pipelines/lakeguard_pipeline.yaml``.

    Returns:
        The path written.
    """
    path = Path(path)
    compiler.Compiler().compile(pipeline_func=lakeguard_pipeline, package_path=os.fspath(path))
    return path


if __name__ == "__main__":
    if len(sys.argv) > 2:
        sys.exit(f"usage: python -m pipelines.lakeguard_pipeline [OUTPUT.yaml]; got {len(sys.argv) - 1} arguments")
    print(compile_pipeline(sys.argv[1] if len(sys.argv) == 2 else COMPILED_PATH))
