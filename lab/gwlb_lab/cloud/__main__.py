import sys

from gwlb_lab.cloud.cli import main

sys.exit(main())
