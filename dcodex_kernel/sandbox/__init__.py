"""The sandbox: limits, isolation, and the supervised process. Knows nothing of Jupyter or gRPC."""
