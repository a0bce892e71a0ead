"""Library output that a fruitres user cannot act on, silenced narrowly: by message and by the module that
emits it, each with the reason. Every other warning still reaches the user; tests/test_warnings.py runs
each entry point and fails on a warning this module does not name.
"""

from __future__ import annotations

import logging
import warnings

# (message regex, category, emitting module regex, why it cannot be acted on)
UNACTIONABLE_WARNINGS: tuple[tuple[str, type[Warning], str, str], ...] = (
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        FutureWarning,
        r"lightning\.pytorch\.utilities\._pytree",
        "Lightning's own use of a torch API deprecated after its release; fixed by a Lightning upgrade",
    ),
    (
        r"Precision bf16-mixed is not supported by the model summary",
        UserWarning,
        r"lightning\.pytorch\.utilities\.model_summary",
        "the summary sizes the weights at 32 bits, which is right: bf16-mixed keeps float32 weights (it is "
        "the default on every machine that runs bf16 natively: trainer/default.yaml)",
    ),
)
LIGHTNING_TIP_PREFIX = "💡 Tip:"  # rank_zero_info adverts for Lightning's cloud services, every Trainer


class _DropLightningTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LIGHTNING_TIP_PREFIX)


def silence_unactionable_warnings() -> None:
    """Install the filters; safe to call more than once."""
    for message, category, module, _why in UNACTIONABLE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    rank_zero_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropLightningTips) for f in rank_zero_logger.filters):
        rank_zero_logger.addFilter(_DropLightningTips())
