"""The whole stack on one machine, with no AWS account: moto server (S3, SQS, DynamoDB), the model server,
the SQS poller that stands in for Lambda's event source mapping, and an HTTP shim that turns requests into API
Gateway events for the real API handlers and serves `ui/`.

`client` (`ivadas local up` / `down`) starts and stops the `supervisor` process; `provision` creates what
template.yaml declares; `lambda_runtime` and `poller` run the real handlers as Lambda does; `api_shim` is API
Gateway; `state` and `snapshot` carry the stack's address and contents across restarts.
"""
