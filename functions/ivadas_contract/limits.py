"""Size limits. Lambda's synchronous payload and SageMaker's InvokeEndpoint body are both capped at 6 MB, so
an image the pipeline accepts must fit in one request."""

MAX_REQUEST_BYTES = 6 * 1024 * 1024
#: Largest inbox object the worker reads (template: MaxImageBytes): its raw bytes are the endpoint's body.
MAX_IMAGE_BYTES = MAX_REQUEST_BYTES
#: What the event around an API request's body takes in Lambda's 6 MB: the headers twice (headers and
#: multiValueHeaders, a Cognito id token among them) and the request context with the authorizer's claims.
#: A signed-in /predict event is about 5 KB besides its body (tests/unit/test_api_contract.py); a generous
#: margin for CloudFront's and the client's own headers.
EVENT_ENVELOPE_BYTES = 64 * 1024
#: Largest API request body that reaches a function: for more, Lambda refuses the event and API Gateway
#: answers 413.
MAX_API_BODY_BYTES = MAX_REQUEST_BYTES - EVENT_ENVELOPE_BYTES
#: Largest image `/predict` takes: its base64 (4/3 of it) inside that body, with 1 KB for the other fields.
MAX_PREDICT_IMAGE_BYTES = (MAX_API_BODY_BYTES - 1024) // 4 * 3
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
