"""``python -m dockrion_nb``: the ``dockrion-nb`` command line."""

import sys

from .cli import main

sys.exit(main())
