"""`python -m kdnas`: the CLI entry (the subcommands live in kdnas/cli/)."""

import sys

from kdnas.cli import main

sys.exit(main())
