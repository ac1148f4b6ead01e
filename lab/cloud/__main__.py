import sys

from lab.cloud.cli import main

sys.exit(main())
