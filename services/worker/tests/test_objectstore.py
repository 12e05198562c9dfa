"""The worker's S3 client: its signature against AWS's published example, and its calls
against the real SeaweedFS."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mediaflow_libs.settings import S3Settings
from mediaflow_worker.objectstore import (
    ObjectStore,
    StreamedBody,
    _Credentials,
    _sign,
    open_object_store,
)

MIB = 1024 * 1024


def test_the_signature_matches_aws_published_example() -> None:
    # "GET Object" in the Signature Version 4 examples of the S3 API reference.
    headers = {"Range": "bytes=0-9"}
    _sign(
        "GET",
        "examplebucket.s3.amazonaws.com",
        "/test.txt",
        {},
        headers,
        hashlib.sha256(b"").hexdigest(),
        _Credentials(
            "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "us-east-1"
        ),
        now=datetime(2013, 5, 24, tzinfo=UTC),
    )
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


@pytest.fixture
async def store(infra: Any) -> AsyncIterator[tuple[ObjectStore, str]]:
    settings = S3Settings(
        **{k: v for k, v in infra.settings_kwargs().items() if k.startswith("s3_")}
    )
    async with open_object_store(settings) as client:
        await client.ensure_bucket(settings.s3_bucket)
        yield client, settings.s3_bucket


async def test_objects_go_up_in_parts_are_copied_listed_and_removed(
    store: tuple[ObjectStore, str],
) -> None:
    s3, bucket = store
    prefix = f"objectstore-test/{secrets.token_hex(4)}/"
    key = prefix + "a name with spaces+plus.mp4"
    parts = [os.urandom(5 * MIB), os.urandom(1234)]
    upload = await s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="video/mp4")
    etags = []
    for number, data in enumerate(parts, start=1):
        sent = await s3.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=io.BytesIO(data),
        )
        etags.append({"PartNumber": number, "ETag": sent["ETag"]})
    assert (await s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix))["Uploads"] == [
        {"Key": key, "UploadId": upload["UploadId"]}
    ]
    await s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": etags}
    )
    await s3.copy_object(
        Bucket=bucket,
        Key=key,
        CopySource={"Bucket": bucket, "Key": key},
        MetadataDirective="REPLACE",
        ContentType="video/mp4",
        Metadata={"sha256": "abc"},
    )
    head = await s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == sum(map(len, parts))
    assert (head["ContentType"], head["Metadata"]) == ("video/mp4", {"sha256": "abc"})
    listed = await s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    assert [item["Key"] for item in listed["Contents"]] == [key]
    await s3.delete_object(Bucket=bucket, Key=key)
    with pytest.raises(ClientError) as caught:
        await s3.head_object(Bucket=bucket, Key=key)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


async def test_an_aborted_upload_is_gone_and_errors_carry_the_store_code(
    store: tuple[ObjectStore, str],
) -> None:
    s3, bucket = store
    key = f"objectstore-test/{secrets.token_hex(4)}"
    upload = await s3.create_multipart_upload(Bucket=bucket, Key=key)
    await s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
    assert (await s3.list_multipart_uploads(Bucket=bucket, Prefix=key))["Uploads"] == []
    with pytest.raises(ClientError) as caught:
        await s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x"
        )
    assert caught.value.response["Error"]["Code"] == "NoSuchUpload"


async def test_a_streamed_part_goes_up_unsigned_as_its_pieces_arrive(
    store: tuple[ObjectStore, str],
) -> None:
    s3, bucket = store
    key = f"objectstore-test/{secrets.token_hex(4)}"
    parts = [os.urandom(5 * MIB + 3), os.urandom(1234)]
    produced: list[int] = []

    async def pieces(data: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(data), 256 * 1024):
            produced.append(start)
            yield data[start : start + 256 * 1024]

    upload = await s3.create_multipart_upload(Bucket=bucket, Key=key)
    etags = []
    for number, data in enumerate(parts, start=1):
        body = StreamedBody(pieces(data), len(data))
        sent = await s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number, Body=body
        )
        # The store's ETag of a part is the MD5 of the bytes it received.
        assert sent["ETag"].strip('"') == hashlib.md5(data).hexdigest()
        etags.append({"PartNumber": number, "ETag": sent["ETag"]})
    await s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": etags}
    )
    assert (await s3.head_object(Bucket=bucket, Key=key))["ContentLength"] == sum(map(len, parts))
    assert len(produced) == 22
    await s3.delete_object(Bucket=bucket, Key=key)
