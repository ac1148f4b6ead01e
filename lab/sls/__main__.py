import sys

from lab.sls.cli import main

sys.exit(main())
