"""LLM providers: the interface (base), the offline default and any OpenAI-compatible endpoint."""
