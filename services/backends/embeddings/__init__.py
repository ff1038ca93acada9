"""Built-in `rag-embeddings` backend: all-MiniLM-L6-v2 sentence embeddings, plain and OpenAI APIs."""
