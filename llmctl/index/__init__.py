"""The only code that touches chromadb, bm25 libraries, the embedding model and the manifest."""
