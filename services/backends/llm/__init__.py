"""Built-in `llm-inference` backend: SmolLM2-135M-Instruct, plain and OpenAI APIs with streaming."""
