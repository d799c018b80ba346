"""The HTTP face: routing, auth and limits, one module per front door and its wire."""
