"""The HTTP API: request models, handlers, problem documents, the OpenAPI description."""
