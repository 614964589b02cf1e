"""Launchers: how a multi-process strategy gets its processes.

- :class:`SubprocessScriptLauncher` (``strategy="ddp"``, the default): the script
  started as ``python train.py`` re-runs itself ``N - 1`` times with torchrun-style
  environment variables, and watches the copies.
- :class:`MultiprocessingLauncher` (``strategy="ddp_spawn"``): ``torch.multiprocessing``
  spawns ``N`` workers that each run the Trainer's stage, and rank 0's result comes back.

Under ``torchrun`` (the variables already set) no launcher runs: the strategy joins
the group torchrun made.
"""

from fitkit.strategies.launchers.launcher import Launcher, find_free_port
from fitkit.strategies.launchers.multiprocessing import MultiprocessingLauncher
from fitkit.strategies.launchers.subprocess_script import SubprocessScriptLauncher

__all__ = ["Launcher", "MultiprocessingLauncher", "SubprocessScriptLauncher", "find_free_port"]
