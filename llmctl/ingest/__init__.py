"""files -> documents -> chunks -> indexes."""
