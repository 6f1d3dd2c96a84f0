import sys

from lstmlm.cli.main import main

sys.exit(main())
