"""What a run records as its hyperparameters, so runs and sweeps can be compared in TensorBoard."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from fruitres.data.datamodule import PREPROCESSING_KEYS
from fruitres.run.provenance import flat_provenance

# Final metrics shown as columns of TensorBoard's HParams tab; logged again when the run ends.
HPARAM_METRICS = ("val/acc_best", "test/acc", "test/acc_top5")


def hparam_metric_tag(metric: str) -> str:
    return "hp/" + metric.replace("/", "_")


def log_hyperparameters(
    cfg: DictConfig, model: L.LightningModule, datamodule: L.LightningDataModule, trainer: L.Trainer
) -> None:
    """Send the composed config, the parameter counts and the run's provenance to every logger.

    The preprocessing is the data module's: the values its config's nulls became (the backbone's own).
    """
    if not trainer.loggers:
        return
    config = OmegaConf.to_container(cfg, resolve=True)
    hparams: dict[str, Any] = {
        key: config[key] for key in ("data", "model", "trainer", "seed", "tags", "ckpt_path") if key in config
    }
    hparams["data"] = (
        {k: v for k, v in hparams["data"].items() if k != "augment"}
        | {key: datamodule.hparams[key] for key in PREPROCESSING_KEYS}
        | {
            "augment": ",".join(k for k, v in (config["data"].get("augment") or {}).items() if v) or "none",
            "num_classes": model.hparams.num_classes,
        }
    )
    hparams["model"] = {k: v for k, v in hparams["model"].items() if k != "class_names"}
    hparams.update(model.parameter_counts())
    hparams["provenance"] = {  # the checkpoint's own provenance (a resumed run) stays in run_record.json
        key: value for key, value in flat_provenance() if not key.startswith("checkpoint.provenance.")
    }
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(hparams, metrics={hparam_metric_tag(m): 0.0 for m in HPARAM_METRICS})
        else:
            logger.log_hyperparams(hparams)


def log_final_metrics(trainer: L.Trainer, metrics: dict[str, float]) -> None:
    """Fill the HParams tab's metric columns with the run's final figures."""
    final = {hparam_metric_tag(m): metrics[m] for m in HPARAM_METRICS if m in metrics}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger) and final:
            logger.log_metrics(final, step=trainer.global_step)
            logger.save()
