"""The Launcher interface and the helpers its implementations share."""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from fitkit.strategies.parallel import launched_by_torchrun_style_env


class Launcher(ABC):
    """Starts the processes of a multi-process strategy and runs a function in each.

    ``launch(function, *args, trainer=None, **kwargs)`` returns global rank 0's result.
    """

    @property
    def launched(self) -> bool:
        """Whether this process already is one of the job's processes (ranks in the environment)."""
        return launched_by_torchrun_style_env()

    @abstractmethod
    def launch(self, function: Callable[..., Any], *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        """Run ``function(*args, **kwargs)`` in every process; return rank 0's result."""


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it), for ``MASTER_PORT``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def rendezvous_env(num_processes: int, num_nodes: int) -> dict[str, str]:
    """``MASTER_ADDR``/``MASTER_PORT``/``NODE_RANK`` for a job fitkit starts itself.

    The address and port the user exported win; otherwise this machine and a free port,
    so two jobs started on one machine at once do not collide. Several nodes need the
    port exported (every node must agree on it). An exported ``WORLD_SIZE`` that is not
    ``num_processes * num_nodes`` is refused here, before any process starts.
    """
    from fitkit.utilities.exceptions import MisconfigurationError, invalid

    env = os.environ
    planned = num_processes * num_nodes
    if env.get("WORLD_SIZE", str(planned)) != str(planned):
        # Checked before any process starts: the job would otherwise run with a size the
        # user did not mean, or (under several nodes) wait for processes that never come.
        raise MisconfigurationError(
            invalid(
                "WORLD_SIZE",
                env["WORLD_SIZE"],
                f"it is exported, but devices={num_processes} x num_nodes={num_nodes} makes {planned} processes "
                "(RANK, LOCAL_RANK and WORLD_SIZE are not all set, so this is not a torchrun launch)",
                f"WORLD_SIZE unset (fitkit sets it for the processes it starts) or equal to {planned}",
            )
        )
    if num_nodes > 1 and "MASTER_PORT" not in env:
        raise MisconfigurationError(
            invalid(
                "num_nodes",
                num_nodes,
                "fitkit cannot pick one port that every node agrees on",
                "MASTER_ADDR, MASTER_PORT and NODE_RANK exported on each node, or a `torchrun` launch",
            )
        )
    addr = env.get("MASTER_ADDR", "127.0.0.1")
    port = env.get("MASTER_PORT") or str(find_free_port())
    return {
        "MASTER_ADDR": addr,
        "MASTER_PORT": port,
        "NODE_RANK": env.get("NODE_RANK", "0"),
        "WORLD_SIZE": str(num_processes * num_nodes),
        "LOCAL_WORLD_SIZE": str(num_processes),
    }


def rank_env(base: dict[str, str], local_rank: int, num_processes: int) -> dict[str, str]:
    """The per-process variables torchrun would set for ``local_rank`` on this node."""
    node_rank = int(base["NODE_RANK"])
    return {
        **base,
        "GROUP_RANK": str(node_rank),
        "LOCAL_RANK": str(local_rank),
        "RANK": str(node_rank * num_processes + local_rank),
    }
