"""The test suite; its folders mirror the package (``e2e/`` holds the slow nnictl and example runs)."""
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
