"""CSV export of filtered results to the results bucket, handed back as a presigned URL: 100,000 rows are
about 30 MB, over the 6 MB a Lambda response may carry. Rows go out as a multipart upload in parts of
PART_BYTES, so memory holds one part and one page of items whatever the row count; an export that runs out of
time ends its file where it is and returns the token to go on from."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ivadas_contract import export
from ivadas_contract.inspection import now_iso
from ivadas_functions.results_query import Plan, query_page

#: S3's smallest part (but the last) is 5 MiB.
PART_BYTES = 8 * 1024 * 1024
PAGE_ITEMS = 1000
#: An export stops taking pages when less than this is left of the invocation.
RESERVE_MS = 4000


@dataclass
class Upload:
    """A multipart upload fed text; one put when it never reaches a part."""

    s3: Any
    bucket: str
    key: str
    upload_id: str | None = None
    parts: list | None = None
    size: int = 0

    def put_part(self, data: bytes) -> None:
        if self.upload_id is None:
            self.upload_id = self.s3.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ContentType="text/csv"
            )["UploadId"]
            self.parts = []
        number = len(self.parts) + 1
        resp = self.s3.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=data
        )
        self.parts.append({"PartNumber": number, "ETag": resp["ETag"]})
        self.size += len(data)

    def finish(self, rest: bytes) -> None:
        if self.upload_id is None:
            self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=rest, ContentType="text/csv")
            self.size = len(rest)
            return
        if rest:
            self.put_part(rest)
        self.s3.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
        )

    def abort(self) -> None:
        if self.upload_id is not None:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)


def export_csv(
    s3: Any, table: Any, bucket: str, p: Plan, time_left_ms: Callable[[], int], token: str | None = None
) -> dict:
    """Write every result of a plan (from `token`) as CSV to `bucket`; what was written and where."""
    key = f"{export.PREFIX}{now_iso()[:10]}/{uuid.uuid4().hex}.csv"
    upload = Upload(s3, bucket, key)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(export.HEADER)
    rows = 0
    try:
        while True:
            page = query_page(table, p, PAGE_ITEMS, token, max_reads=10**6)  # the clock bounds it
            for item in page.items:
                writer.writerow(export.row(item))
            rows += len(page.items)
            token = page.next_token
            if buffer.tell() >= PART_BYTES:
                upload.put_part(buffer.getvalue().encode())
                buffer.seek(0)
                buffer.truncate()
            if token is None or time_left_ms() < RESERVE_MS:
                break
        upload.finish(buffer.getvalue().encode())
    except BaseException:
        upload.abort()
        raise
    return {"key": key, "rows": rows, "bytes": upload.size, "complete": token is None, "next_token": token}
