"""``python -m hrnas_automl`` runs the console script."""
import sys

from hrnas_automl.cli import main

sys.exit(main())
