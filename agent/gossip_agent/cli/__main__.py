"""`python -m gossip_agent.cli` = `gossipctl`."""

import sys

from gossip_agent.cli.main import main

sys.exit(main())
