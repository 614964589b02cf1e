"""The Trainer and its loops."""

from fitkit.trainer.trainer import Trainer

__all__ = ["Trainer"]
