"""Seeding every random number generator a training run touches."""

from __future__ import annotations

import os
import random

import torch

from fitkit.utilities.exceptions import MisconfigurationError, invalid
from fitkit.utilities.rank_zero import rank_zero_warn

_SEED_ENV = "FITKIT_GLOBAL_SEED"
_WORKERS_ENV = "FITKIT_SEED_WORKERS"
_MAX_SEED = 2**32 - 1

# Devices whose generators torch.manual_seed does not reach (XLA keeps a seed per
# device, 101 in every new process) take the seed when their strategy sets up:
# seed_everything leaves it here, and a process that never called it (a spawned
# replica) takes $FITKIT_GLOBAL_SEED once.
_device_seed: int | None = None
_env_seed_taken = False


def seed_everything(seed: int | None = None, workers: bool = True) -> int:
    """Seed Python's ``random``, NumPy (if installed), torch (CPU and CUDA) and XLA devices.

    XLA's generator is seeded when the next ``Trainer(accelerator="xla")`` sets up (or
    its launched replicas do), which keeps torch_xla's runtime unstarted until then.

    Args:
        seed: the seed, in ``[0, 2**32 - 1]``. ``None`` reads ``FITKIT_GLOBAL_SEED``
            or, if unset, picks 0 with a warning.
        workers: when True, the Trainer gives every ``DataLoader`` worker of a loader
            without its own ``worker_init_fn`` a distinct, reproducible seed for
            ``random``, NumPy and torch, derived from this seed.

    Returns:
        The seed used.

    Example::

        >>> import fitkit
        >>> fitkit.seed_everything(42)
        42
    """
    if seed is None:
        env = os.environ.get(_SEED_ENV)
        if env is None:
            rank_zero_warn(f"No seed given and ${_SEED_ENV} is unset: seeding with 0.")
            seed = 0
        else:
            try:
                seed = int(env)
            except ValueError:
                raise MisconfigurationError(
                    invalid(_SEED_ENV, env, "the environment variable is not an integer", f"an int in [0, {_MAX_SEED}]")
                ) from None
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        raise MisconfigurationError(invalid("seed", seed, "it is out of range", f"an int in [0, {_MAX_SEED}]"))
    os.environ[_SEED_ENV] = str(seed)
    os.environ[_WORKERS_ENV] = "1" if workers else "0"
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:  # NumPy is optional
        pass
    else:
        np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    global _device_seed
    _device_seed = seed
    return seed


def take_device_seed() -> int | None:
    """The seed a device outside torch's generators (XLA) should start from, once.

    Returns the seed of the last :func:`seed_everything` not yet taken; in a process
    that never called it, ``$FITKIT_GLOBAL_SEED`` the first time (so replicas started by
    a launcher follow their parent's seed); otherwise None: the device's stream goes
    on where it is, as torch's own generators do between two ``fit`` calls.
    """
    global _device_seed, _env_seed_taken
    seed, _device_seed = _device_seed, None
    if seed is None and not _env_seed_taken:
        env = os.environ.get(_SEED_ENV, "")
        seed = int(env) if env.isdigit() and int(env) <= _MAX_SEED else None
    _env_seed_taken = True
    return seed


def worker_init_function(worker_id: int) -> None:
    """Seed ``random`` and NumPy in a DataLoader worker from torch's per-worker seed.

    torch already gives each worker a distinct torch seed (``base_seed + worker_id``,
    where ``base_seed`` comes from the loader's generator); this carries that seed
    over to the other generators so augmentations drawn with them differ per worker
    and repeat per seed.
    """
    seed = torch.initial_seed() % (_MAX_SEED + 1)
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:
        return
    np.random.seed(seed)


def workers_should_be_seeded() -> bool:
    """Whether the last ``seed_everything`` call asked for seeded workers."""
    return os.environ.get(_WORKERS_ENV) == "1"
