"""`python -m fruitres.eval ckpt_path=<file>`: test a checkpoint on Test/ and explain the number."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fruitres.callbacks.figures import RunFigures, log_figure
from fruitres.checkpoints.loading import load_checkpoint
from fruitres.data.test_set import CheckpointTestSet
from fruitres.errors import ConfigError
from fruitres.files import write_csv_whole
from fruitres.models.tta import check_tta
from fruitres.reports.error_analysis import PREDICTION_FIELDS, PerImageOutcomes, top_losses_figure
from fruitres.reports.eval_report import confused_pairs, per_class_rows, print_report, write_eval_report
from fruitres.reports.uncertainty import accuracy_interval
from fruitres.run.instantiate import instantiate_callbacks, instantiate_loggers
from fruitres.run.mlflow_tracking import store_run_files
from fruitres.run.provenance import note_data, note_trainer
from fruitres.run.task import hydra_main, run_task

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Checkpoint → its Test/ set → trainer.test → per-class report, confused pairs and figures → metrics."""
    checkpoint = load_checkpoint(cfg.ckpt_path)
    checkpoint.model.tta = check_tta(cfg.get("tta"))  # test-time augmentation: softmax averaged over flips
    data = OmegaConf.to_container(cfg.data, resolve=True)
    if data["data_dir"] is None:  # the folder the checkpoint was trained on
        del data["data_dir"]
    datamodule = CheckpointTestSet(checkpoint.class_names, **(dict(checkpoint.datamodule.hparams) | data))
    datamodule.prepare_data()

    callbacks = instantiate_callbacks(cfg)
    figures = next((callback for callback in callbacks if isinstance(callback, RunFigures)), None)
    if figures is None:
        raise ConfigError("callbacks.figures=null is not allowed in eval; it collects the predictions")
    outcomes = PerImageOutcomes()
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=[*callbacks, outcomes], logger=instantiate_loggers(cfg)
    )
    (tested,) = trainer.test(checkpoint.model, datamodule=datamodule, verbose=False)
    note_data(datamodule)
    note_trainer(trainer)

    predictions = figures.predictions["test"]
    results = predictions.compute()
    names = checkpoint.class_names
    metrics = {
        **{key: float(value) for key, value in tested.items()},
        **{f"test/{name}_macro": float(results[f"{name}_macro"]) for name in ("precision", "recall", "f1")},
    }
    rows = per_class_rows(results, names)
    pairs = confused_pairs(results["confusion_matrix"], names, cfg.top_confusions)
    num_images = int(results["confusion_matrix"].sum())
    summary = {
        "ckpt_path": str(checkpoint.path),
        "data_dir": str(datamodule.root),
        "num_images": num_images,
        "tta": checkpoint.model.tta,  # null = off
        "metrics": metrics,
        "test_acc_ci95": accuracy_interval(metrics.get("test/acc"), num_images),  # Wilson
        # the Test images without a near twin in training (callbacks/novel_accuracy.py)
        "test_acc_novel_ci95": accuracy_interval(
            metrics.get("test/acc_novel"), int(metrics.get("test/novel_images", 0))
        ),
        "class_names": names,
        "classes_without_test_images": [row["class"] for row in rows if row["support"] == 0],
        "most_confused": pairs,
    }
    rendered = figures.logged_figures.get("test") or predictions.figures(
        "test", datamodule.mean, datamodule.std, figures.ncols
    )
    output_dir = Path(cfg.paths.output_dir)
    if trainer.world_size == 1:  # each process sees only its share of the images under DDP
        test_set = datamodule.datasets["test"]
        image_rows = outcomes.rows(datamodule.image_paths("test"), names)
        write_csv_whole(
            output_dir / "predictions.csv",
            [{k: row[k] for k in PREDICTION_FIELDS} for row in image_rows],
            PREDICTION_FIELDS,
        )
        top = image_rows[: cfg.top_losses]
        if top:
            images = torch.stack([test_set[row["index"]][0] for row in top]).float() / 255
            rendered = {**rendered, "top_losses": top_losses_figure(images, top)}
            log_figure(trainer, "test/top_losses", rendered["top_losses"])
    else:
        log.warning("predictions.csv and top_losses.png need one device; evaluate with trainer.devices=1")
    write_eval_report(output_dir, summary, rows, pairs, rendered)
    report_files = sorted(path for path in output_dir.iterdir() if path.suffix in {".json", ".csv", ".png"})
    store_run_files(trainer, report_files, "eval")  # MLflow: provenance tags and the report
    print_report(metrics, rows, pairs, cfg.show_classes, num_images)
    log.info("Evaluation report written to %s", output_dir)
    return metrics


@hydra_main("eval")
def main(cfg: DictConfig) -> float | None:
    return run_task(cfg, evaluate)


if __name__ == "__main__":
    main()
