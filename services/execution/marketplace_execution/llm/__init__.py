"""LLM providers (the port is ``domain.llm``): the offline default and any OpenAI-compatible
endpoint."""
