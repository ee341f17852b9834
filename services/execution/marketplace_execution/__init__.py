"""The execution service: LLM work with pacing, smart retries and durable attempts."""
