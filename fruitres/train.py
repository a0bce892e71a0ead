"""`python -m fruitres.train`: fit a fine-tuned ResNet, then test its best checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from fruitres.config import instantiate_callbacks, instantiate_loggers, print_config_tree
from fruitres.hparams import log_final_metrics, log_hyperparameters

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Seed → data → model → callbacks → loggers → trainer → fit → test the best checkpoint → metrics."""
    L.seed_everything(cfg.seed, workers=True)

    datamodule: L.LightningDataModule = instantiate(cfg.data)
    datamodule.prepare_data()

    model: L.LightningModule = instantiate(
        cfg.model, num_classes=datamodule.num_classes, class_names=datamodule.class_names
    )
    callbacks = instantiate_callbacks(cfg)
    loggers = instantiate_loggers(cfg)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    log_hyperparameters(cfg, model, trainer)

    if cfg.train:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = dict(trainer.callback_metrics)

    if cfg.test:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("No best checkpoint was saved; testing the weights the run ended with")
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
        metrics.update(trainer.callback_metrics)

    metrics = {name: float(value) for name, value in metrics.items()}
    log_final_metrics(trainer, metrics)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    print_config_tree(cfg, save_to=Path(cfg.paths.output_dir) / "config_tree.log")
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
