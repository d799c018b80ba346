"""Genspark: the client and transports, protocol adapters, SSE decoding, classifier, catalogue."""
