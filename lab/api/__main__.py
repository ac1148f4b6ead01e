import sys

from lab.api.cli import main

sys.exit(main())
