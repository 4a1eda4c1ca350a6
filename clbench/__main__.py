import sys

from clbench.runners.cli import main

sys.exit(main())
