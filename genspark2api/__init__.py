"""genspark2api: an OpenAI-compatible HTTP API over the Genspark.ai web product."""

__version__ = "0.1.0"
