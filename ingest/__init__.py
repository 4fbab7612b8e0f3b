"""Parse documents with unstructured, chunk them in model tokens, embed and store them."""

import os

# Quarry is self-hosted: unstructured's usage notice and its per-parse analytics (a thread
# and an HTTPS request to its vendor for every file parsed) are off unless a user has set
# these variables already (to empty strings, to turn the analytics on). Set before any of
# unstructured is imported (it pings once on import), so in every process that parses,
# the parse workers' fork server included.
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
os.environ.setdefault("SCARF_NO_ANALYTICS", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
