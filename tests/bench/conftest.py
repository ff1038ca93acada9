"""bench/ is a tool beside the distribution, not part of it: make it importable from the
checkout however pytest is started (`python -m pytest` adds the cwd, `pytest` does not)."""

import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[2])
if REPO not in sys.path:
    sys.path.insert(0, REPO)
