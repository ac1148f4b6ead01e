import sys

from gwlb_lab.cli import main

sys.exit(main())
