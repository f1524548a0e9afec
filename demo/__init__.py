"""Demo: a real CPU LLM server (llm_server) for `make demo` and end-to-end tests."""
