"""What a run records as its hyperparameters, so runs and sweeps can be compared in TensorBoard and MLflow.

TensorBoard's HParams tab gets an experiment written here with its hparams API rather than the flattened
config: the keys the sweep varies, then a short curated set, and the metrics that say which run won. The
tab lists first the hparams marked as differing, the rest by name; the swept keys are the ones marked. The
metrics are the run's own scalar tags (the tab shows each one's last value), so nothing extra is drawn in
the Scalars tab from step 0; the test interval and wall time are logged once, at the run's last step.
The provenance goes to the Text tab (and run_record.json), not to columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2, summary_v2

from fruitres.data.preprocessing import PREPROCESSING_KEYS
from fruitres.reports.uncertainty import accuracy_interval
from fruitres.run.provenance import flat_provenance, tested_images
from fruitres.run.run_names import job_overrides, swept_keys

CURATED_KEYS = (  # what tells one fine-tuning run from another, beyond what the sweep varies
    "model.arch",
    "model.weights",
    "model.weights_path",
    "model.frozen_stages",
    "callbacks.gradual_unfreezing",
    "model.optimizer.lr",
    "model.backbone_lr_mult",
    "data.batch_size",
    "data.image_size",
    "trainer.max_epochs",
    "trainer.precision",
    "seed",
)
TRAINABLE_PARAMS = "params/trainable"  # what frozen_stages left to train
METRICS = {  # scalar tag → what the HParams tab calls it
    "val/acc_best": "best validation accuracy",
    "test/acc": "test accuracy",
    "test/acc_ci_low": "test accuracy, 95% interval low",
    "test/acc_ci_high": "test accuracy, 95% interval high",
    "time/wall_s": "wall time (s)",
}
PROVENANCE_TAG = "provenance"
NOT_IN_CONFIG = object()


def log_hyperparameters(
    cfg: DictConfig, model: L.LightningModule, datamodule: L.LightningDataModule, trainer: L.Trainer
) -> None:
    """TensorBoard: the HParams experiment and this run's values, and the provenance as text. MLflow: the
    same curated values and the parameter counts (its provenance goes to tags). Other loggers (CSV): the
    composed config, the parameter counts and the provenance."""
    swept = swept_keys()  # read once: it loads the sweep's multirun.yaml
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            _log_hparams_experiment(logger, shown_hparams(cfg, model, swept), swept)
            logger.experiment.add_text(PROVENANCE_TAG, provenance_markdown(), global_step=0)
        elif isinstance(logger, MLFlowLogger):
            logger.log_hyperparams(shown_hparams(cfg, model, swept) | model.parameter_counts())
        else:
            logger.log_hyperparams(_whole_config(cfg, model, datamodule))


def shown_hparams(
    cfg: DictConfig, model: L.LightningModule, swept: list[str]
) -> dict[str, bool | int | float | str]:
    """The HParams tab's columns of this run: the `swept` keys, the curated set, the trainable weights."""
    keys = list(dict.fromkeys([*swept, *CURATED_KEYS]))
    shown = {key: _hparam_value(_config_value(cfg, key)) for key in keys}
    shown[TRAINABLE_PARAMS] = model.parameter_counts()[TRAINABLE_PARAMS]
    return shown


def _config_value(cfg: DictConfig, key: str) -> Any:
    if key == "callbacks.gradual_unfreezing":  # a callback config: on or off
        return OmegaConf.select(cfg, key) is not None
    if OmegaConf.select(cfg, key, default=NOT_IN_CONFIG) is NOT_IN_CONFIG:  # a swept config group: its choice
        return job_overrides().get(key)
    return OmegaConf.select(cfg, key)


def _hparam_value(value: Any) -> bool | int | float | str:
    """TensorBoard takes booleans, numbers and strings; anything else is shown as its text."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


@rank_zero_only  # DDP ranks > 0 have no event file
def _log_hparams_experiment(
    logger: TensorBoardLogger, hparams: dict[str, bool | int | float | str], swept: list[str]
) -> None:
    """The experiment (columns, metrics) and this run's session; a sweep job's trial is its swept values."""
    trial = str(logger.version) or Path(logger.save_dir).parent.name  # a single run: its folder's name
    writer = logger.experiment._get_file_writer()
    writer.add_summary(_experiment_summary(hparams, swept))
    writer.add_summary(summary_v2.hparams_pb(hparams, trial_id=trial))
    writer.flush()


def _experiment_summary(hparams: dict[str, bool | int | float | str], swept: list[str]) -> Summary:
    """summary_v2.hparams_config_pb with the swept keys marked as differing: the tab lists those first."""
    experiment = api_pb2.Experiment(
        hparam_infos=[api_pb2.HParamInfo(name=name, differs=name in swept) for name in hparams],
        metric_infos=[
            api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=title)
            for tag, title in METRICS.items()
        ],
    )
    summary = Summary()
    summary.value.add(
        tag=metadata.EXPERIMENT_TAG,
        metadata=metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(experiment=experiment)),
        tensor=metadata.NULL_TENSOR,
    )
    return summary


def provenance_markdown() -> str:
    """The run's provenance as a table (a resumed run's checkpoint's own stays in the record)."""
    rows = [
        f"| {key} | {str(value).replace('|', '&#124;')} |"
        for key, value in flat_provenance()
        if not key.startswith("checkpoint.provenance.")
    ]
    return "\n".join(["| key | value |", "| --- | --- |", *rows])


def _whole_config(
    cfg: DictConfig, model: L.LightningModule, datamodule: L.LightningDataModule
) -> dict[str, Any]:
    """The composed config, the data module's resolved preprocessing, the parameter counts, provenance."""
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
    hparams["provenance"] = {
        key: value for key, value in flat_provenance() if not key.startswith("checkpoint.provenance.")
    }
    return hparams


def log_final_metrics(trainer: L.Trainer, metrics: dict[str, float], wall_time_s: float) -> None:
    """The HParams metrics that are no scalar yet, once at the last step: the test interval and wall time."""
    final = {"time/wall_s": wall_time_s}
    interval = accuracy_interval(metrics.get("test/acc"), tested_images())
    if interval is not None:
        final |= {"test/acc_ci_low": interval[0], "test/acc_ci_high": interval[1]}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_metrics(final, step=trainer.global_step)
            logger.save()
