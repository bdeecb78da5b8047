"""The processes of a run under a launcher (``torchrun``, ``accelerate launch``): who writes, who waits, who
does which share of the work, and how the shares come back together.

Every process runs the same command on the same inputs. Work is split by position (``shard``: items i with
``i % num_processes == process_index``), results are gathered into every process in the order they had in
one process (``gather_in_order``), and whatever is written, logged or decided is written, logged or decided
by the main process alone (``is_main``), the others waiting at a ``barrier`` and, for a decision, receiving
it (``broadcast``). In one process (no launcher) every function here is the one-process identity: nothing
is split, nothing waits.

Accelerate's ``PartialState`` knows the processes (it starts the process group the launcher describes:
gloo on CPU, nccl on GPUs); this module only names what the rest of the package asks of it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object

from cardioner.errors import ConfigError

T = TypeVar("T")


def state() -> PartialState:
    """Accelerate's view of the processes (started on first use from the launcher's environment).

    Under a launcher on a machine without GPUs the processes share the CPU (gloo): Accelerate must be told
    so, or each process would take itself for the only one and train, write and export on its own.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return PartialState(cpu=launched and not torch.accelerator.is_available())  # read on first use only


def num_processes() -> int:
    return state().num_processes


def process_index() -> int:
    return state().process_index


def is_main() -> bool:
    """Whether this is the process that writes, logs and decides (the only one without a launcher)."""
    return state().is_main_process


def device() -> torch.device:
    """The device this process computes on (its GPU under a multi-GPU launch, else the CPU)."""
    return state().device


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for in one process)."""
    if num_processes() > 1:
        state().wait_for_everyone()


def shard(count: int) -> list[int]:
    """This process's share of ``count`` items, by position: i with ``i % num_processes == process_index``."""
    return list(range(process_index(), count, num_processes()))


def gather_in_order(results: Sequence[tuple[int, T]]) -> list[T]:
    """Every process's ``(position, result)`` pairs, gathered into every process and put in position order.

    Args:
        results: this process's results, each with the position of its item (``shard``'s numbers).

    Returns:
        the results of all processes, ordered by position (what one process would have in a list).
    """
    pairs = gather_object(list(results)) if num_processes() > 1 else list(results)
    return [result for _, result in sorted(pairs, key=lambda pair: pair[0])]


def broadcast(value: Any) -> Any:
    """The main process's ``value``, in every process (a decision made once)."""
    if num_processes() == 1:
        return value
    holder = [value]
    broadcast_object_list(holder, from_process=0)
    return holder[0]


def quiet_other_processes(logger: logging.Logger) -> None:
    """Let only the main process log below ERROR: a run's story is told once, its failures by everyone."""
    if not is_main():
        logger.setLevel(logging.ERROR)


def refuse_several(what: str) -> None:
    """Raise ConfigError when launched on several processes: ``what`` runs in one process only."""
    if num_processes() > 1:
        raise ConfigError(
            f"{what} runs in one process: launch it without torchrun / accelerate launch ({num_processes()} "
            "processes here); a single training run (cardioner train) is what runs on several processes"
        )
