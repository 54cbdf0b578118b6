"""llmctl: from RAG demo to RAG in production."""

__version__ = "0.1.0"
__all__ = ["Workspace"]


def __getattr__(name: str):
    if name == "Workspace":  # imported on first use: `llmctl --help` stays fast
        from llmctl.workspace import Workspace

        return Workspace
    raise AttributeError(name)
