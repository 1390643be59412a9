"""Search strategies: plain Python over architecture samples (ask / tell), no NNI or Optuna inside.

Example::

    >>> from hrnas_automl.strategies import RandomSearch, search
    >>> choices = {"s1_b0": ["k3", "k5", "k7", "xception"], "s1_b1": ["k3", "k5", "k7", "xception"]}
    >>> search(RandomSearch(choices, seed=0), lambda arch: float(arch["s1_b0"] == "k5"), n=8)[1]
    1.0
"""
from hrnas_automl.strategies.base import (
    Canonical,
    Choices,
    Constraint,
    InfeasibleConstraintError,
    SpaceExhaustedError,
    Strategy,
    crossover,
    mutate,
    random_arch,
    search,
)
from hrnas_automl.strategies.evolution import Evolution
from hrnas_automl.strategies.random_search import RandomSearch

__all__ = [
    "Canonical",
    "Choices",
    "Constraint",
    "InfeasibleConstraintError",
    "SpaceExhaustedError",
    "Strategy",
    "RandomSearch",
    "Evolution",
    "search",
    "random_arch",
    "mutate",
    "crossover",
]
