"""``python -m bitbert.cli``."""
import sys

from .app import main

sys.exit(main())
