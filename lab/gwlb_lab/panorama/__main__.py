import sys

from gwlb_lab.panorama.cli import main

sys.exit(main())
