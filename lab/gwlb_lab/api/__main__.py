import sys

from gwlb_lab.api.cli import main

sys.exit(main())
