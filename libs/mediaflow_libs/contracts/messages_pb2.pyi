import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Job(_message.Message):
    __slots__ = ("task_id", "user_id", "source_url", "requested_at", "quality", "mode", "audio_format")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_URL_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FORMAT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    user_id: str
    source_url: str
    requested_at: _timestamp_pb2.Timestamp
    quality: str
    mode: str
    audio_format: str
    def __init__(self, task_id: _Optional[str] = ..., user_id: _Optional[str] = ..., source_url: _Optional[str] = ..., requested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., quality: _Optional[str] = ..., mode: _Optional[str] = ..., audio_format: _Optional[str] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("id", "user_id", "status", "progress", "bytes_done", "bytes_total", "source_url", "attempt", "error", "result", "created_at", "updated_at", "options")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_URL_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    id: str
    user_id: str
    status: str
    progress: int
    bytes_done: int
    bytes_total: int
    source_url: str
    attempt: int
    error: TaskError
    result: TaskResult
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    options: TaskOptions
    def __init__(self, id: _Optional[str] = ..., user_id: _Optional[str] = ..., status: _Optional[str] = ..., progress: _Optional[int] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., source_url: _Optional[str] = ..., attempt: _Optional[int] = ..., error: _Optional[_Union[TaskError, _Mapping]] = ..., result: _Optional[_Union[TaskResult, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., options: _Optional[_Union[TaskOptions, _Mapping]] = ...) -> None: ...

class TaskOptions(_message.Message):
    __slots__ = ("quality", "mode", "audio_format")
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FORMAT_FIELD_NUMBER: _ClassVar[int]
    quality: str
    mode: str
    audio_format: str
    def __init__(self, quality: _Optional[str] = ..., mode: _Optional[str] = ..., audio_format: _Optional[str] = ...) -> None: ...

class TaskError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("size", "sha256", "content_type", "filename", "media", "expires_at")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    size: int
    sha256: str
    content_type: str
    filename: str
    media: TaskMedia
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, size: _Optional[int] = ..., sha256: _Optional[str] = ..., content_type: _Optional[str] = ..., filename: _Optional[str] = ..., media: _Optional[_Union[TaskMedia, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TaskMedia(_message.Message):
    __slots__ = ("title", "duration_seconds", "width", "height", "video_codec", "audio_codec")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    VIDEO_CODEC_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CODEC_FIELD_NUMBER: _ClassVar[int]
    title: str
    duration_seconds: float
    width: int
    height: int
    video_codec: str
    audio_codec: str
    def __init__(self, title: _Optional[str] = ..., duration_seconds: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., video_codec: _Optional[str] = ..., audio_codec: _Optional[str] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("event_id", "task")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    event_id: int
    task: Task
    def __init__(self, event_id: _Optional[int] = ..., task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class CredentialRevoked(_message.Message):
    __slots__ = ("credential_sha256", "user_id")
    CREDENTIAL_SHA256_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    credential_sha256: str
    user_id: str
    def __init__(self, credential_sha256: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...
