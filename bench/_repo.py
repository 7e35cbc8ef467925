"""The repository's top folder, put on the import path: the benchmarks run as scripts from bench/, and share the
tests' process harness (tests/support/processes.py) and faulty sandbox. Imported first by every benchmark that
uses them; tests/ never imports bench/."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))
