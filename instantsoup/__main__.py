import sys

from instantsoup.cli import main

sys.exit(main())
