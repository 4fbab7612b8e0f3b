"""Vector storage (Qdrant: embedded engine or server) and the search service."""
