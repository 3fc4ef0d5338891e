"""Size limits. Lambda's synchronous payload and SageMaker's InvokeEndpoint body are both capped at 6 MB, so
an image the pipeline accepts must fit in one request."""

MAX_REQUEST_BYTES = 6 * 1024 * 1024
#: Largest inbox object the worker reads and largest image `/predict` takes (template: MaxImageBytes).
MAX_IMAGE_BYTES = MAX_REQUEST_BYTES
#: Largest image (width x height) decoded. A 40 MP image is 120 MB as RGB, far more than any inspection camera
#: sends; anything larger is refused from its header, before its pixels are decoded.
MAX_PIXELS = 40_000_000
#: Shortest image side inspected. The backbones' deepest features have a stride of 16 pixels: an image with a
#: shorter side holds less than one deep patch of content, so its score would come from interpolation and
#: padding, not from the part. No inspection camera sends such an image (a 1x1 is a placeholder or a tracker).
MIN_IMAGE_SIDE = 16
#: Longest class name or line name a query or body may carry (openapi/api.yaml): far over any real name, and
#: under DynamoDB's 2,048-byte key limit, so an absurd one is a 400, not a failed query.
MAX_NAME_CHARS = 256
#: Longest page token (the tokens the API issues are a few hundred characters).
MAX_TOKEN_CHARS = 2048
#: Longest free text of a model decision (approval note, rejection reason).
MAX_NOTE_CHARS = 1000
