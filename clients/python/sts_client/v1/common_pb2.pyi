import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(_message.Message):
    __slots__ = ("application_id", "organization_name", "role_name", "role_value")
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    application_id: str
    organization_name: str
    role_name: str
    role_value: str
    def __init__(self, application_id: _Optional[str] = ..., organization_name: _Optional[str] = ..., role_name: _Optional[str] = ..., role_value: _Optional[str] = ...) -> None: ...

class ApplicationToken(_message.Message):
    __slots__ = ("application_token_id", "application_id", "application_name", "issue_time", "expire_time")
    APPLICATION_TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_NAME_FIELD_NUMBER: _ClassVar[int]
    ISSUE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    application_token_id: str
    application_id: str
    application_name: str
    issue_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, application_token_id: _Optional[str] = ..., application_id: _Optional[str] = ..., application_name: _Optional[str] = ..., issue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UserToken(_message.Message):
    __slots__ = ("user_token_id", "uid", "username", "first_name", "last_name", "email", "cellphone", "person_ref", "security_level", "issue_time", "expire_time", "absolute_expire_time", "application_id", "roles", "anonymised")
    USER_TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    FIRST_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_NAME_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    CELLPHONE_FIELD_NUMBER: _ClassVar[int]
    PERSON_REF_FIELD_NUMBER: _ClassVar[int]
    SECURITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    ISSUE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    ABSOLUTE_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    ANONYMISED_FIELD_NUMBER: _ClassVar[int]
    user_token_id: str
    uid: str
    username: str
    first_name: str
    last_name: str
    email: str
    cellphone: str
    person_ref: str
    security_level: int
    issue_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    absolute_expire_time: _timestamp_pb2.Timestamp
    application_id: str
    roles: _containers.RepeatedCompositeFieldContainer[Role]
    anonymised: bool
    def __init__(self, user_token_id: _Optional[str] = ..., uid: _Optional[str] = ..., username: _Optional[str] = ..., first_name: _Optional[str] = ..., last_name: _Optional[str] = ..., email: _Optional[str] = ..., cellphone: _Optional[str] = ..., person_ref: _Optional[str] = ..., security_level: _Optional[int] = ..., issue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., absolute_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., application_id: _Optional[str] = ..., roles: _Optional[_Iterable[_Union[Role, _Mapping]]] = ..., anonymised: _Optional[bool] = ...) -> None: ...
