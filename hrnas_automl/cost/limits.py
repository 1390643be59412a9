"""Budgets: a feasibility test over the analytic MACs/params and the predicted latency, and the error of a budget
no architecture of the space can meet."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hrnas_automl.cost.backends import check_backend

if TYPE_CHECKING:
    from hrnas_automl.arch import Space
    from hrnas_automl.cost.tables import CostTable

__all__ = ["InfeasibleConstraintError", "check_limit", "cost_limit"]


class InfeasibleConstraintError(ValueError):
    """No architecture meets a budget: a limit below the space's smallest cost, or no feasible, not-yet-proposed
    architecture within a strategy's ``max_attempts`` draws."""


def check_limit(space: str, metric: str, limit: float, lo: float, hi: float, where: str) -> None:
    """Raise :class:`InfeasibleConstraintError` naming the smallest reachable value ``lo`` (and the largest, ``hi``)
    of ``metric`` when ``limit`` is below it; ``where`` says at which input / on which device."""
    if limit < lo:
        raise InfeasibleConstraintError(f"max_{metric} {limit:.6g} is below the smallest {metric} of {space} {where} "
                                        f"({lo:.6g}; the largest is {hi:.6g}); raise the limit to at least {lo:.6g}")


def cost_limit(space: str | Space, *, max_macs: float | None = None, max_params: float | None = None,
               max_latency_ms: float | None = None, max_conv_macs: float | None = None,
               max_first_exit_macs: float | None = None, input_shape: Sequence[int] | None = None,
               space_args: Mapping[str, Any] | None = None,
               threads: int | None = None, device: str = "cpu", backend: str = "torch"
               ) -> Callable[[dict[str, Any]], bool] | None:
    """A feasibility test for strategies: the analytic MACs/params, the Conv2d-only MACs (DetNAS's budget count), a
    RANet's first-exit MACs (the least any sample costs, so a budget below it fails every sample) and the latency
    predicted by the table measured on this machine (``backend`` ``torch`` or ``onnxruntime``, ``threads``,
    ``device``) are within every limit given. None without limits. ``space_args`` are added to
    ``space`` (a name or a resolved :class:`~hrnas_automl.arch.Space`).

    Raises:
        InfeasibleConstraintError: a limit is below the smallest value the space can reach (the message
            names the smallest and the largest), so no search spins on an impossible budget.
        ValueError: an unknown latency backend.
    """
    check_backend(backend, device)
    if all(limit is None for limit in (max_macs, max_params, max_latency_ms, max_conv_macs, max_first_exit_macs)):
        return None
    from hrnas_automl.arch import resolve_space
    from hrnas_automl.cost.analytic import conv_macs_table, cost_table, first_exit_macs_table  # no torch if kept

    def latency_table() -> CostTable:
        from hrnas_automl.cost.latency import latency_table  # torch: a latency limit measures on this machine

        return latency_table(space, shape, threads=threads, device=device, backend=backend)

    space = resolve_space(space, **dict(space_args or {}))
    shape = space.input_shape(input_shape)
    where = f"at {'x'.join(map(str, shape))}"
    checks: list[tuple[CostTable, int, float]] = []  # (table, metric index, limit)
    limits = ((lambda: cost_table(space, shape), "macs", 0, max_macs, where),
              (lambda: cost_table(space, shape), "params", 1, max_params, where),
              (lambda: conv_macs_table(space, shape), "conv_macs", 0, max_conv_macs, where),
              (lambda: first_exit_macs_table(space, shape), "first_exit_macs", 0, max_first_exit_macs, where),
              (latency_table, "latency_ms", 0, max_latency_ms, f"{where} on {device} under {backend} (predicted)"))
    for table_of, metric, i, limit, at in limits:
        if limit is not None:
            table = table_of()  # kept by the space: asking twice compiles once
            lo, hi = table.bounds()
            check_limit(space.name, metric, limit, lo[i], hi[i], at)
            checks.append((table, i, limit))

    def feasible(arch: dict[str, Any]) -> bool:
        return all(table.evaluate(arch)[i] <= limit for table, i, limit in checks)

    return feasible
