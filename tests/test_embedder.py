import numpy as np


def test_batched_embedding_with_progress_matches_one_call(embedder):
    from llmctl.embedding.local import Embedder

    batched = Embedder(embedder.cfg.model_copy(update={"batch_size": 16}))  # the same loaded model
    texts = [("word " * n).strip() for n in (3, 250, 40, 7, 120, 90, 1, 60)] * 5
    seen = []
    with_progress = batched.embed_documents(texts, seen.append)
    assert np.allclose(with_progress, embedder.embed_documents(texts), atol=1e-5)
    assert sum(seen) == len(texts) and len(seen) == 3 and max(seen) <= 16
    assert np.allclose(np.linalg.norm(with_progress, axis=1), 1.0, atol=1e-5)  # normalized


def test_model_window_and_dimension(embedder):
    assert embedder.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert embedder.max_seq_length == 256 and embedder.dimension == 384
