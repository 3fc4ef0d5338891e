"""Size limits. Lambda's synchronous payload and SageMaker's InvokeEndpoint body are both capped at 6 MB, so
an image the pipeline accepts must fit in one request."""

MAX_REQUEST_BYTES = 6 * 1024 * 1024
#: Largest inbox object the worker reads and largest image `/predict` takes (template: MaxImageBytes).
MAX_IMAGE_BYTES = MAX_REQUEST_BYTES
#: Largest image (width x height) decoded. A 40 MP image is 120 MB as RGB, far more than any inspection camera
#: sends; anything larger is refused from its header, before its pixels are decoded.
MAX_PIXELS = 40_000_000
