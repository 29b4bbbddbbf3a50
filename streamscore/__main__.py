"""``python -m streamscore``: the same as the ``streamscore`` command."""

import sys

from streamscore.cli import main

sys.exit(main())
