"""The test run's settings: the site's own, in development mode, asked for explicitly.

Crawls in the tests fetch a local site on 127.0.0.1, so private addresses are allowed here;
the SSRF tests turn the guard back on with ``override_settings``.
"""

import os

os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("CRAWL_ALLOW_PRIVATE_NETWORKS", "true")

from archon_site.settings import *  # noqa: E402,F403
