"""Wire bodies as the service sends them: captured 2024-10-02-preview replies, the 2025-02-02-preview example and
the documented 2024-02-02-preview shapes. Replayed by the scripted server."""

from __future__ import annotations

import base64
import io

SESSION_GUID = "6f055fe5-0000-4000-8000-000000000001"

# ---- 2024-10-02-preview (captured replies) ----------------------------------------------------------------
EXECUTE_2410 = {
    "$id": "1",
    "id": "8148371f-18fe-4cfd-8ca8-20246d469817",
    "identifier": "testidentifier000003",
    "executionType": "synchronous",
    "status": "Succeeded",
    "result": {
        "$id": "2",
        "stdout": "Hello world\n",
        "stderr": "",
        "executionResult": "",
        "executionTimeInMilliseconds": 7,
    },
}
EXECUTE_2410_HEADERS = {
    "x-ms-session-guid": SESSION_GUID,
    "x-ms-allocation-time": "108.7297",
    "x-ms-overall-execution-time": "461.8155",
    "api-supported-versions": "2024-10-02-preview",
}
UPLOAD_2410 = {
    "$id": "1",
    "name": "cert.txt",
    "type": "",
    "contentType": "",
    "sizeInBytes": 7,
    "lastModifiedAt": "2024-11-11T09:05:02.4865293Z",
}
LIST_2410 = {
    "$id": "1",
    "value": [
        {
            "$id": "2",
            "name": "cert.txt",
            "type": "file",
            "contentType": "text/plain; charset=utf-8",
            "sizeInBytes": 7,
            "lastModifiedAt": "2024-11-11T09:05:02.4865293Z",
        }
    ],
}
LIST_2410_EMPTY = {"$id": "1", "value": []}
FILE_INFO_2410 = {"$id": "1", "name": "cert.txt", "sizeInBytes": 7, "lastModifiedAt": "2024-11-11T09:05:02.4865293Z"}

# ---- 2025-02-02-preview (the specification's example) ----------------------------------------------------
SESSION_2502 = {
    "identifier": "testid1",
    "createdAt": "2025-01-21T03:38:05.232Z",
    "lastAccessedAt": "2025-01-21T03:38:05.232Z",
    "expireAt": "2025-01-05T22:18:41.752Z",
    "etag": "9334cb07-aafd-45a0-90bd-448080a91f57",
}

# ---- 2024-02-02-preview (the documented shapes) -----------------------------------------------------------
EXECUTE_2402 = {
    "$id": "1",
    "properties": {
        "$id": "2",
        "status": "Success",
        "stdout": "hello world\n",
        "stderr": "",
        "result": 42,
        "executionTimeInMilliseconds": 33,
    },
}
EXECUTE_2402_FAILURE = {
    "$id": "1",
    "properties": {
        "$id": "2",
        "status": "Failure",
        "stdout": "before\n",
        "stderr": 'Traceback (most recent call last):\n  File "<cell>", line 2, in <module>\nZeroDivisionError: division by zero\n',
        "result": "",
        "executionTimeInMilliseconds": 3,
    },
}
UPLOAD_2402 = {
    "$id": "1",
    "value": [
        {
            "$id": "2",
            "properties": {
                "$id": "3",
                "filename": "test1.txt",
                "size": 16,
                "lastModifiedTime": "2024-05-02T07:21:07.9922617Z",
            },
        }
    ],
}
LIST_2402 = {
    "$id": "1",
    "value": [
        {
            "$id": "2",
            "properties": {
                "$id": "3",
                "filename": "test1.txt",
                "size": 16,
                "lastModifiedTime": "2024-05-02T07:21:07.9922617Z",
            },
        },
        {
            "$id": "4",
            "properties": {
                "$id": "5",
                "filename": "test2.txt",
                "size": 17,
                "last_modified_time": "2024-05-02T07:21:08.8802793Z",
            },
        },
    ],
}


def tiny_png() -> bytes:
    """A real 2x2 PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), (255, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def image_value(png: bytes) -> dict:
    return {"type": "image", "format": "png", "base64_data": base64.b64encode(png).decode()}


def resource_execution(
    stdout: str = "", stderr: str = "", value: object = "", status: str = "Succeeded", exec_id: str = "exec-1"
) -> dict:
    """A 2024-10+ execution body in the captured shape."""
    return {
        "$id": "1",
        "id": exec_id,
        "identifier": "s",
        "executionType": "synchronous",
        "status": status,
        "result": {
            "$id": "2",
            "stdout": stdout,
            "stderr": stderr,
            "executionResult": value,
            "executionTimeInMilliseconds": 5,
        },
    }


def envelope_execution(stdout: str = "", stderr: str = "", value: object = "", status: str = "Success") -> dict:
    """A 2024-02-02 execution body."""
    return {
        "$id": "1",
        "properties": {
            "$id": "2",
            "status": status,
            "stdout": stdout,
            "stderr": stderr,
            "result": value,
            "executionTimeInMilliseconds": 5,
        },
    }
