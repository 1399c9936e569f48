import sys

from twin.app.cli import main

sys.exit(main())
