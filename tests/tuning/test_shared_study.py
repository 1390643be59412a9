"""examples/hrnas/tune_postgres.yml, one study shared by workers on several machines through PostgreSQL: the config
validates as written, and two `hrnas-automl tune` workers run it on a throwaway server (its URL replaced, its
heartbeat and retry settings kept; a cheaper objective)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests import EXAMPLES
from tests.tuning.workers import CHEAP, run_workers, stats
from hrnas_automl.tuning.config import load_tune_config

EXAMPLE = EXAMPLES / "hrnas" / "tune_postgres.yml"


def test_postgres_example_validates() -> None:
    config = load_tune_config(EXAMPLE)
    assert config.storage.url.startswith("postgresql+psycopg://")
    assert (config.storage.heartbeat_interval, config.storage.grace_period, config.storage.max_retry) == (60, 180, 1)


@pytest.mark.slow
def test_two_workers_share_the_example_study_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["storage"]["url"] = postgres_url
    data.update(n_trials=4, objective_args=CHEAP, sampler_args={"population_size": 2})
    path = tmp_path / "tune.yml"
    path.write_text(yaml.safe_dump(data))
    codes, _ = run_workers(path, 2)
    assert codes == [0, 0], "\n".join(p.read_text()[-2000:] for p in sorted(tmp_path.glob("worker*.log")))
    result = stats(path)
    assert 4 <= result["complete"] <= 5 and (result["running"], result["duplicates"], result["fail"]) == (0, 0, 0)
