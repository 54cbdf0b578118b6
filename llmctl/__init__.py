"""llmctl: from RAG demo to RAG in production."""

__version__ = "0.1.0"
