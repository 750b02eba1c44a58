"""Measure LWLRD settings on a transpose-attacked model and write the table to docs/sanitizer.md.

The sweep trains one attacked model with lakeguard's default recipe (or loads one), then, for each
setting, sanitizes a fresh copy and records the validation AUC difference, the canary leakage
against its class-mean baseline, the re-identification rate and the probe matches. The default
setting is chosen on the validation split only; test AUC is printed for reference.

Usage:
    python benchmarks/sweep_sanitizer.py --out docs/sanitizer-sweep.json [--model DIR --canaries FILE]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path

import torch

from lakeguard.attacks import Canaries, select_canaries, train_transpose
from lakeguard.audit import ClassMeanBaseline, audit_model
from lakeguard.data import load_dataset
from lakeguard.defenses import LayerDecaySettings, sanitize_layer_decay
from lakeguard.gate import load_policy
from lakeguard.metrics.utility import evaluate_scores, paired_auc_difference
from lakeguard.models import ModelMeta, load_model, save_model
from lakeguard.training import pick_device, predict_scores

SETTINGS = [
    # (anchor, base_lr, layer_decay, epochs, batch_size, seed)
    ("input", 1e-4, 1.0, 2, 128, 0),
    ("input", 1e-3, 1.0, 2, 128, 0),
    ("input", 1e-3, 0.5, 2, 128, 0),
    ("input", 2e-3, 0.5, 2, 128, 0),
    ("input", 3e-3, 0.5, 2, 128, 0),
    ("input", 3e-3, 0.3, 2, 128, 0),
    ("input", 2e-3, 0.5, 4, 128, 0),
    ("output", 1e-3, 0.5, 2, 128, 0),
    ("output", 3e-3, 0.3, 2, 128, 0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flag", default="retinamnist")
    parser.add_argument("--model", help="attacked model folder; trained with the default recipe when absent")
    parser.add_argument("--canaries", help="canaries JSON of that model")
    parser.add_argument("--epochs", type=int, default=300, help="attack epochs when training the model")
    parser.add_argument("--num-images", type=int, default=100, help="images the attack memorizes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/sanitizer-sweep.json")
    parser.add_argument(
        "--setting", action="append", default=[],
        help="anchor,base_lr,layer_decay,epochs,batch_size,seed[,schedule]; repeat to replace the built-in grid",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    device = pick_device("auto")
    data = load_dataset(args.flag)
    info = data.info
    meta = ModelMeta(arch="mlp", dataset=info.flag, task=info.task.value, in_channels=info.n_channels, num_outputs=info.num_outputs)
    images, labels = data.train.tensors()
    val_images, _ = data.val.tensors()
    test_images, _ = data.test.tensors()
    policy = load_policy()

    if args.model:
        model, _, _ = load_model(args.model, meta)
        canaries = Canaries.load(args.canaries)
    else:
        torch.manual_seed(args.seed)
        model = meta.build()
        canaries = select_canaries(data.train.labels, info.task, info.num_outputs, num_images=args.num_images, seed=args.seed)
        train_transpose(
            model, images, labels, info.task, canaries, epochs=args.epochs, lr=1e-3, memorization_lr=1e-3,
            batch_size=128, memorization_batch_size=64, seed=args.seed, device=device,
        )
        save_model(model, Path(args.out).with_suffix(".model"), meta)
        canaries.save(Path(args.out).with_suffix(".canaries.json"))

    baseline = ClassMeanBaseline.fit(images, data.train.labels, info.task, info.num_outputs)

    def audit(candidate, stage):
        return audit_model(
            candidate, stage=stage, dataset=info.flag, arch="mlp", model_sha256="", train_images=images,
            train_labels=data.train.labels, task=info.task, num_outputs=info.num_outputs, canaries=canaries,
            extra_tensors=[], margin=policy.leakage_margin_ssim, codes_per_class=243, random_codes=256,
            seed=args.seed, device=device, baseline=baseline,
        )

    trained_val = predict_scores(model, val_images, info.task, device=device)
    trained_test = evaluate_scores(data.test.labels, predict_scores(model, test_images, info.task, device=device), info.task, n_resamples=200)
    trained_audit = audit(model, "trained")
    rows = [{
        "setting": "none (attacked model)",
        "val_auc": evaluate_scores(data.val.labels, trained_val, info.task, n_resamples=200).auc,
        "test_auc": trained_test.auc,
        **trained_audit.leakage_summary(),
    }]
    grid = SETTINGS
    if args.setting:
        grid = [
            (a, float(lr), float(d), int(e), int(b), int(s), *rest)
            for a, lr, d, e, b, s, *rest in (item.split(",") for item in args.setting)
        ]
    for anchor, base_lr, decay, epochs, batch_size, seed, *rest in grid:
        schedule = rest[0] if rest else "constant"
        candidate = copy.deepcopy(model)
        settings = LayerDecaySettings(
            base_lr=base_lr, layer_decay=decay, anchor=anchor, epochs=epochs, batch_size=batch_size, seed=seed,
            schedule=schedule,
        )
        started = time.perf_counter()
        sanitize_layer_decay(candidate, images, labels, info.task, settings, device=device)
        seconds = time.perf_counter() - started
        val_scores = predict_scores(candidate, val_images, info.task, device=device)
        delta = paired_auc_difference(data.val.labels, trained_val, val_scores, info.task, n_resamples=1000, seed=args.seed)
        test = evaluate_scores(data.test.labels, predict_scores(candidate, test_images, info.task, device=device), info.task, n_resamples=200)
        result = audit(candidate, "sanitized")
        row = {
            "setting": f"anchor={anchor} base_lr={base_lr:g} layer_decay={decay:g} epochs={epochs} batch={batch_size} seed={seed} schedule={schedule}",
            "anchor": anchor, "base_lr": base_lr, "layer_decay": decay, "epochs": epochs,
            "batch_size": batch_size, "seed": seed, "schedule": schedule,
            "val_auc": delta.auc_b, "val_auc_delta": delta.delta, "val_auc_delta_ci": [delta.ci_low, delta.ci_high],
            "test_auc": test.auc, "sanitize_seconds": seconds,
            **result.leakage_summary(),
        }
        rows.append(row)
        print(json.dumps(row))
    Path(args.out).write_text(json.dumps({"flag": info.flag, "num_images": len(canaries.train_indices), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
