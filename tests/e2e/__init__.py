"""End-to-end runs: real nnictl experiments and the examples as the README runs them (marked slow)."""
