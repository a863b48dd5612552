"""``python -m pyro_vae.cli``: the ``pyro-vae`` command."""

import sys

from pyro_vae.cli.main import main

sys.exit(main())
