"""The local moto's write-through journal: every S3 object and DynamoDB item write it answered is there after
a kill -9 of moto and a restore into a new one (and nothing it refused is)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from infra.local.journal import Journal, frame, read_frames
from infra.local.processes import free_port, spawn, wait_http
from infra.template import REGION

BUCKET, TABLE = "journal-bucket", "journal-table"


@contextlib.contextmanager
def moto(journal_dir: Path, log: Path) -> Iterator[subprocess.Popen]:
    port = free_port()
    proc = spawn(
        ["-m", "infra.local.moto_server", "--port", str(port), "--journal-dir", str(journal_dir)], log
    )
    saved = dict(os.environ)
    os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION})  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/moto-api/", 60, proc)
        proc.url = f"http://127.0.0.1:{port}"
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        boto3.client("dynamodb").create_table(
            TableName=TABLE, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        )  # fmt: skip
        yield proc
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def post(url: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body or {}).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def test_answered_writes_survive_a_kill_and_refused_ones_do_not(tmp_path: Path) -> None:
    journal_dir, log = tmp_path / "journal", tmp_path / "moto.log"
    big = os.urandom(6 * 1024 * 1024)
    with moto(journal_dir, log) as first:
        s3, ddb = boto3.client("s3"), boto3.client("dynamodb")
        put = s3.put_object(Bucket=BUCKET, Key="a b/é.png", Body=b"png", ContentType="image/png",
                            Metadata={"class-name": "widget"})  # fmt: skip
        s3.put_object(Bucket=BUCKET, Key="gone.txt", Body=b"x")
        s3.delete_object(Bucket=BUCKET, Key="gone.txt")
        s3.copy_object(Bucket=BUCKET, Key="copy.png", CopySource={"Bucket": BUCKET, "Key": "a b/é.png"})
        up = s3.create_multipart_upload(Bucket=BUCKET, Key="model.tar.gz")["UploadId"]
        parts = [
            {"PartNumber": n, "ETag": s3.upload_part(Bucket=BUCKET, Key="model.tar.gz", UploadId=up,
                                                     PartNumber=n, Body=chunk)["ETag"]}
            for n, chunk in ((1, big[: 5 * 1024 * 1024]), (2, big[5 * 1024 * 1024 :]))
        ]  # fmt: skip
        multipart = s3.complete_multipart_upload(
            Bucket=BUCKET, Key="model.tar.gz", UploadId=up, MultipartUpload={"Parts": parts}
        )
        ddb.put_item(
            TableName=TABLE, Item={"pk": {"S": "r"}, "n": {"N": "1"}, "m": {"M": {"a": {"L": [{"S": "x"}]}}}}
        )
        for _ in range(3):
            ddb.update_item(TableName=TABLE, Key={"pk": {"S": "r"}}, UpdateExpression="ADD n :one",
                            ExpressionAttributeValues={":one": {"N": "1"}})  # fmt: skip
        ddb.put_item(TableName=TABLE, Item={"pk": {"S": "deleted"}})
        ddb.delete_item(TableName=TABLE, Key={"pk": {"S": "deleted"}})
        with pytest.raises(ClientError):  # refused: never journalled
            ddb.put_item(
                TableName=TABLE, Item={"pk": {"S": "r"}}, ConditionExpression="attribute_not_exists(pk)"
            )
        first.send_signal(signal.SIGKILL)
        first.wait()
    with moto(journal_dir, log) as second:
        restored = post(second.url + "/_ivadas/journal/restore", {"buckets": [BUCKET], "tables": [TABLE]})
        assert restored == {"objects": 3, "items": 1, "missing_blobs": 0, "torn_frames": 0}
        s3, ddb = boto3.client("s3"), boto3.client("dynamodb")
        got = s3.get_object(Bucket=BUCKET, Key="a b/é.png")
        assert (got["Body"].read(), got["ETag"], got["ContentType"], got["Metadata"]) == (
            b"png", put["ETag"], "image/png", {"class-name": "widget"})  # fmt: skip
        assert s3.get_object(Bucket=BUCKET, Key="copy.png")["Body"].read() == b"png"
        model = s3.get_object(Bucket=BUCKET, Key="model.tar.gz")
        assert model["ETag"] == multipart["ETag"] and model["Body"].read() == big
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
        assert sorted(keys) == ["a b/é.png", "copy.png", "model.tar.gz"]
        items = ddb.scan(TableName=TABLE)["Items"]
        assert items == [{"pk": {"S": "r"}, "n": {"N": "4"}, "m": {"M": {"a": {"L": [{"S": "x"}]}}}}]
        # a write after the restore lands in the same journal: compaction keeps both, the next moto has both
        s3.put_object(Bucket=BUCKET, Key="later.txt", Body=b"later")
        assert post(second.url + "/_ivadas/journal/compact")["records"] == 5
        # one body per distinct content still stored (the copy shares its source's); the deleted one's is gone
        assert len(list((journal_dir / "blobs").glob("*/*"))) == 3
        second.send_signal(signal.SIGKILL)
        second.wait()
    with moto(journal_dir, log) as third:
        restored = post(third.url + "/_ivadas/journal/restore", {"buckets": [BUCKET], "tables": [TABLE]})
        assert (restored["objects"], restored["items"]) == (4, 1)
        assert boto3.client("s3").get_object(Bucket=BUCKET, Key="later.txt")["Body"].read() == b"later"


def test_a_torn_last_frame_ends_the_replay_and_a_second_writer_is_refused(tmp_path: Path) -> None:
    segment = tmp_path / "journal-000001.log"
    whole = frame({"k": "s3", "c": "b", "key": "k", "deleted": True})
    segment.write_bytes(whole + frame({"k": "ddb", "c": "t", "key": "{}", "item": {}})[:-3])
    assert read_frames(segment) == ([{"k": "s3", "c": "b", "key": "k", "deleted": True}], True)
    journal = Journal(tmp_path)
    assert journal.torn == 1 and journal.segment == 2
    with pytest.raises(SystemExit, match="in use"):
        Journal(tmp_path)
    journal.close()
