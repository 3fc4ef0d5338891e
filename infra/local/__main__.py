"""`python -m infra.local`: the supervisor process that `ivadas local up` starts in the background."""

import sys

from infra.local.supervisor import main

sys.exit(main())
