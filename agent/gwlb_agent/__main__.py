import sys

from gwlb_agent.cli import main

sys.exit(main())
