import sys

from gwlb_lab.gwlb.cli import main

sys.exit(main())
