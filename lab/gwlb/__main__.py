import sys

from lab.gwlb.cli import main

sys.exit(main())
