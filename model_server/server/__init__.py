"""The SageMaker inference container: HTTP routes (`app`), request parsing and errors (`protocol`), the
endpoint's scoring pipeline (`scoring`), micro-batching (`batching`), loaded endpoints (`endpoint`), settings
(`config`) and the `serve` program (`serve`)."""
