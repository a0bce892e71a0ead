"""`python -m fruitres.train`: fit a fine-tuned ResNet, then test its best checkpoint."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from fruitres.lr_find import find_lr
from fruitres.models.tta import check_tta
from fruitres.reports.uncertainty import result_line
from fruitres.run.hparams import log_final_metrics, log_hyperparameters
from fruitres.run.instantiate import instantiate_callbacks, instantiate_loggers
from fruitres.run.launch import check_launch
from fruitres.run.mlflow_tracking import store_run_files
from fruitres.run.precision_probe import settle_precision
from fruitres.run.provenance import (
    ProvenanceInCheckpoints,
    note_data,
    note_tested,
    note_trainer,
    tested_images,
)
from fruitres.run.resume import expand_resume_argv, resume_point
from fruitres.run.resume_checks import check_resumed_run
from fruitres.run.task import hydra_main, run_task

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Seed → data → model → callbacks → loggers → trainer → fit → test the best checkpoint → metrics."""
    started = time.monotonic()
    L.seed_everything(cfg.seed, workers=True)
    resume = resume_point(cfg)  # None unless ckpt_path is set; checks the checkpoint is whole

    datamodule: L.LightningDataModule = instantiate(cfg.data)
    datamodule.prepare_data()

    model: L.LightningModule = instantiate(
        cfg.model, num_classes=datamodule.num_classes, class_names=datamodule.class_names
    )
    model.tta = check_tta(cfg.get("tta"))  # the test pass's views (validation never averages any)
    settle_precision(cfg.trainer, model, datamodule)  # trainer.precision=fastest: timed on this model
    callbacks = [*instantiate_callbacks(cfg), ProvenanceInCheckpoints()]
    loggers = instantiate_loggers(cfg, purge_step=resume.step if resume else None)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    check_launch(trainer)
    datamodule.setup()  # the splits' fingerprints and counts, for the HParams tab and the run record
    note_data(datamodule)
    check_resumed_run(cfg, resume)  # the same model and the same data as the checkpoint recorded
    note_trainer(trainer)
    if cfg.train and cfg.tune.lr_find and resume is None:  # a resumed run keeps its learning rate
        lr = find_lr(trainer, model, datamodule, Path(cfg.paths.output_dir), **cfg.lr_find)
        model.hparams.optimizer["lr"] = cfg.model.optimizer.lr = lr
    log_hyperparameters(cfg, model, datamodule, trainer)

    if cfg.train:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume.checkpoint if resume else None)
    metrics = dict(trainer.callback_metrics)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""

    if cfg.test:
        if not best:
            log.warning("No best checkpoint was saved; testing the weights the run ended with")
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
        metrics.update(trainer.callback_metrics)
        note_tested(trainer, datamodule)  # the test accuracy's interval counts the images it saw
    store_run_files(trainer, [Path(best)] if best else [], "checkpoints")  # MLflow: provenance tags, best

    metrics = {name: float(value) for name, value in metrics.items()}
    wall_time_s = time.monotonic() - started
    log_final_metrics(trainer, metrics, wall_time_s=wall_time_s)
    if trainer.is_global_zero:
        log.info(result_line(metrics, tested_images(), epochs_done(trainer), wall_time_s, model.tta))
    return metrics


def epochs_done(trainer: L.Trainer) -> float:
    """Epochs trained, a cut last epoch counted by its share of steps."""
    per_epoch = trainer.num_training_batches / max(1, trainer.accumulate_grad_batches)
    if not per_epoch or per_epoch == float("inf"):
        return float(trainer.current_epoch)
    return trainer.global_step / per_epoch


@hydra_main("train")
def main(cfg: DictConfig) -> float | None:
    return run_task(cfg, train)


if __name__ == "__main__":
    sys.argv = expand_resume_argv(sys.argv)  # resume=<run dir>: that run's overrides, in that directory
    main()
