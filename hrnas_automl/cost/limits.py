"""Budgets: a feasibility test over the analytic MACs/params and the predicted latency, and the error of a budget
no architecture of the space can meet."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hrnas_automl.cost.tables import CostTable

__all__ = ["InfeasibleConstraintError", "cost_limit"]


class InfeasibleConstraintError(ValueError):
    """No architecture meets a budget: a limit below the space's smallest cost, or no feasible, not-yet-proposed
    architecture within a strategy's ``max_attempts`` draws."""


def _check_limit(space: str, metric: str, limit: float, lo: float, hi: float, where: str) -> None:
    if limit < lo:
        raise InfeasibleConstraintError(f"max_{metric} {limit:.6g} is below the smallest {metric} of {space} {where} "
                                        f"({lo:.6g}; the largest is {hi:.6g}); raise the limit to at least {lo:.6g}")


def cost_limit(space: str, *, max_macs: float | None = None, max_params: float | None = None,
               max_latency_ms: float | None = None, input_shape: Sequence[int] | None = None,
               space_args: Mapping[str, Any] | None = None, threads: int | None = None, device: str = "cpu"
               ) -> Callable[[dict[str, Any]], bool] | None:
    """A feasibility test for strategies: the analytic MACs/params and the latency predicted by the table
    measured on this machine (``threads``, ``device``) are within every limit given. None without limits.

    Raises:
        InfeasibleConstraintError: a limit is below the smallest value the space can reach (the message
            names the smallest and the largest), so no search spins on an impossible budget.
    """
    if max_macs is None and max_params is None and max_latency_ms is None:
        return None
    from hrnas_automl.cost.analytic import cost_table, default_shape  # torch: only once there is a limit

    shape = default_shape(space, input_shape)
    args = dict(space_args or {})
    where = f"at {'x'.join(map(str, shape))}"
    checks: list[tuple[CostTable, int, float]] = []  # (table, metric index, limit)
    if max_macs is not None or max_params is not None:
        table = cost_table(space, shape, **args)
        lo, hi = table.bounds()
        for i, (metric, limit) in enumerate((("macs", max_macs), ("params", max_params))):
            if limit is not None:
                _check_limit(space, metric, limit, lo[i], hi[i], where)
                checks.append((table, i, limit))
    if max_latency_ms is not None:
        from hrnas_automl.cost.latency import latency_table

        table = latency_table(space, shape, threads=threads, device=device, **args)
        lo, hi = table.bounds()
        _check_limit(space, "latency_ms", max_latency_ms, lo[0], hi[0], f"{where} on {device} (predicted)")
        checks.append((table, 0, max_latency_ms))

    def feasible(arch: dict[str, Any]) -> bool:
        return all(table.evaluate(arch)[i] <= limit for table, i, limit in checks)

    return feasible
