import sys

from lab.panorama.cli import main

sys.exit(main())
