import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeyKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_KIND_UNSPECIFIED: _ClassVar[KeyKind]
    KEY_KIND_ENCRYPTION: _ClassVar[KeyKind]
    KEY_KIND_SIGNING: _ClassVar[KeyKind]
    KEY_KIND_SECRET: _ClassVar[KeyKind]

class KeyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_STATE_UNSPECIFIED: _ClassVar[KeyState]
    KEY_STATE_STAGED: _ClassVar[KeyState]
    KEY_STATE_PRIMARY: _ClassVar[KeyState]
    KEY_STATE_DECRYPT_ONLY: _ClassVar[KeyState]
    KEY_STATE_DESTROYED: _ClassVar[KeyState]
KEY_KIND_UNSPECIFIED: KeyKind
KEY_KIND_ENCRYPTION: KeyKind
KEY_KIND_SIGNING: KeyKind
KEY_KIND_SECRET: KeyKind
KEY_STATE_UNSPECIFIED: KeyState
KEY_STATE_STAGED: KeyState
KEY_STATE_PRIMARY: KeyState
KEY_STATE_DECRYPT_ONLY: KeyState
KEY_STATE_DESTROYED: KeyState

class KeyInfo(_message.Message):
    __slots__ = ("kid", "kind", "alg", "use", "state", "create_time", "not_before_time", "not_after_time", "destroy_after_time")
    KID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ALG_FIELD_NUMBER: _ClassVar[int]
    USE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_TIME_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_TIME_FIELD_NUMBER: _ClassVar[int]
    DESTROY_AFTER_TIME_FIELD_NUMBER: _ClassVar[int]
    kid: str
    kind: KeyKind
    alg: str
    use: str
    state: KeyState
    create_time: _timestamp_pb2.Timestamp
    not_before_time: _timestamp_pb2.Timestamp
    not_after_time: _timestamp_pb2.Timestamp
    destroy_after_time: _timestamp_pb2.Timestamp
    def __init__(self, kid: _Optional[str] = ..., kind: _Optional[_Union[KeyKind, str]] = ..., alg: _Optional[str] = ..., use: _Optional[str] = ..., state: _Optional[_Union[KeyState, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., not_before_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., not_after_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., destroy_after_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetJwksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetJwksResponse(_message.Message):
    __slots__ = ("jwks_json", "max_age", "next_rotation_time", "primary_encryption_kid", "primary_signing_kid")
    JWKS_JSON_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_FIELD_NUMBER: _ClassVar[int]
    NEXT_ROTATION_TIME_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_ENCRYPTION_KID_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_SIGNING_KID_FIELD_NUMBER: _ClassVar[int]
    jwks_json: str
    max_age: _duration_pb2.Duration
    next_rotation_time: _timestamp_pb2.Timestamp
    primary_encryption_kid: str
    primary_signing_kid: str
    def __init__(self, jwks_json: _Optional[str] = ..., max_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., next_rotation_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., primary_encryption_kid: _Optional[str] = ..., primary_signing_kid: _Optional[str] = ...) -> None: ...

class DecryptRequest(_message.Message):
    __slots__ = ("jwe",)
    JWE_FIELD_NUMBER: _ClassVar[int]
    jwe: str
    def __init__(self, jwe: _Optional[str] = ...) -> None: ...

class DecryptResponse(_message.Message):
    __slots__ = ("plaintext", "kid", "content_type")
    PLAINTEXT_FIELD_NUMBER: _ClassVar[int]
    KID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    plaintext: bytes
    kid: str
    content_type: str
    def __init__(self, plaintext: _Optional[bytes] = ..., kid: _Optional[str] = ..., content_type: _Optional[str] = ...) -> None: ...

class SignRequest(_message.Message):
    __slots__ = ("payload", "type", "content_type")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    type: str
    content_type: str
    def __init__(self, payload: _Optional[bytes] = ..., type: _Optional[str] = ..., content_type: _Optional[str] = ...) -> None: ...

class SignResponse(_message.Message):
    __slots__ = ("jws", "kid")
    JWS_FIELD_NUMBER: _ClassVar[int]
    KID_FIELD_NUMBER: _ClassVar[int]
    jws: str
    kid: str
    def __init__(self, jws: _Optional[str] = ..., kid: _Optional[str] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("jws",)
    JWS_FIELD_NUMBER: _ClassVar[int]
    jws: str
    def __init__(self, jws: _Optional[str] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("payload", "kid", "alg", "protected_header_json")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    KID_FIELD_NUMBER: _ClassVar[int]
    ALG_FIELD_NUMBER: _ClassVar[int]
    PROTECTED_HEADER_JSON_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    kid: str
    alg: str
    protected_header_json: str
    def __init__(self, payload: _Optional[bytes] = ..., kid: _Optional[str] = ..., alg: _Optional[str] = ..., protected_header_json: _Optional[str] = ...) -> None: ...

class GenerateDataKeyRequest(_message.Message):
    __slots__ = ("key_length_bits", "context")
    KEY_LENGTH_BITS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    key_length_bits: int
    context: bytes
    def __init__(self, key_length_bits: _Optional[int] = ..., context: _Optional[bytes] = ...) -> None: ...

class GenerateDataKeyResponse(_message.Message):
    __slots__ = ("plaintext", "wrapped_key", "kid")
    PLAINTEXT_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_KEY_FIELD_NUMBER: _ClassVar[int]
    KID_FIELD_NUMBER: _ClassVar[int]
    plaintext: bytes
    wrapped_key: str
    kid: str
    def __init__(self, plaintext: _Optional[bytes] = ..., wrapped_key: _Optional[str] = ..., kid: _Optional[str] = ...) -> None: ...

class UnwrapRequest(_message.Message):
    __slots__ = ("wrapped_key", "context")
    WRAPPED_KEY_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    wrapped_key: str
    context: bytes
    def __init__(self, wrapped_key: _Optional[str] = ..., context: _Optional[bytes] = ...) -> None: ...

class UnwrapResponse(_message.Message):
    __slots__ = ("plaintext", "kid")
    PLAINTEXT_FIELD_NUMBER: _ClassVar[int]
    KID_FIELD_NUMBER: _ClassVar[int]
    plaintext: bytes
    kid: str
    def __init__(self, plaintext: _Optional[bytes] = ..., kid: _Optional[str] = ...) -> None: ...

class RewrapRequest(_message.Message):
    __slots__ = ("wrapped_key", "context")
    WRAPPED_KEY_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    wrapped_key: str
    context: bytes
    def __init__(self, wrapped_key: _Optional[str] = ..., context: _Optional[bytes] = ...) -> None: ...

class RewrapResponse(_message.Message):
    __slots__ = ("wrapped_key", "kid")
    WRAPPED_KEY_FIELD_NUMBER: _ClassVar[int]
    KID_FIELD_NUMBER: _ClassVar[int]
    wrapped_key: str
    kid: str
    def __init__(self, wrapped_key: _Optional[str] = ..., kid: _Optional[str] = ...) -> None: ...

class RotateKeysRequest(_message.Message):
    __slots__ = ("kinds",)
    KINDS_FIELD_NUMBER: _ClassVar[int]
    kinds: _containers.RepeatedScalarFieldContainer[KeyKind]
    def __init__(self, kinds: _Optional[_Iterable[_Union[KeyKind, str]]] = ...) -> None: ...

class RotateKeysResponse(_message.Message):
    __slots__ = ("created",)
    CREATED_FIELD_NUMBER: _ClassVar[int]
    created: _containers.RepeatedCompositeFieldContainer[KeyInfo]
    def __init__(self, created: _Optional[_Iterable[_Union[KeyInfo, _Mapping]]] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ("kind", "include_destroyed")
    KIND_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DESTROYED_FIELD_NUMBER: _ClassVar[int]
    kind: KeyKind
    include_destroyed: bool
    def __init__(self, kind: _Optional[_Union[KeyKind, str]] = ..., include_destroyed: _Optional[bool] = ...) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[KeyInfo]
    def __init__(self, keys: _Optional[_Iterable[_Union[KeyInfo, _Mapping]]] = ...) -> None: ...
