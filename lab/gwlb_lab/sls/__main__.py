import sys

from gwlb_lab.sls.cli import main

sys.exit(main())
