import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from sts_client.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ApplicationCredential(_message.Message):
    __slots__ = ("application_id", "application_secret")
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_SECRET_FIELD_NUMBER: _ClassVar[int]
    application_id: str
    application_secret: str
    def __init__(self, application_id: _Optional[str] = ..., application_secret: _Optional[str] = ...) -> None: ...

class UserCredential(_message.Message):
    __slots__ = ("username", "password")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class LogonApplicationRequest(_message.Message):
    __slots__ = ("application_credential", "application_credential_jwe")
    APPLICATION_CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_CREDENTIAL_JWE_FIELD_NUMBER: _ClassVar[int]
    application_credential: ApplicationCredential
    application_credential_jwe: str
    def __init__(self, application_credential: _Optional[_Union[ApplicationCredential, _Mapping]] = ..., application_credential_jwe: _Optional[str] = ...) -> None: ...

class LogonApplicationResponse(_message.Message):
    __slots__ = ("application_token",)
    APPLICATION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    application_token: _common_pb2.ApplicationToken
    def __init__(self, application_token: _Optional[_Union[_common_pb2.ApplicationToken, _Mapping]] = ...) -> None: ...

class ValidateApplicationTokenRequest(_message.Message):
    __slots__ = ("application_token_id",)
    APPLICATION_TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    application_token_id: str
    def __init__(self, application_token_id: _Optional[str] = ...) -> None: ...

class ValidateApplicationTokenResponse(_message.Message):
    __slots__ = ("active", "application_token")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    active: bool
    application_token: _common_pb2.ApplicationToken
    def __init__(self, active: _Optional[bool] = ..., application_token: _Optional[_Union[_common_pb2.ApplicationToken, _Mapping]] = ...) -> None: ...

class RenewApplicationTokenRequest(_message.Message):
    __slots__ = ("application_token_id",)
    APPLICATION_TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    application_token_id: str
    def __init__(self, application_token_id: _Optional[str] = ...) -> None: ...

class RenewApplicationTokenResponse(_message.Message):
    __slots__ = ("application_token",)
    APPLICATION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    application_token: _common_pb2.ApplicationToken
    def __init__(self, application_token: _Optional[_Union[_common_pb2.ApplicationToken, _Mapping]] = ...) -> None: ...

class ReleaseApplicationTokenRequest(_message.Message):
    __slots__ = ("application_token_id",)
    APPLICATION_TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    application_token_id: str
    def __init__(self, application_token_id: _Optional[str] = ...) -> None: ...

class ReleaseApplicationTokenResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetApplicationInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetApplicationInfoResponse(_message.Message):
    __slots__ = ("application",)
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    application: Application
    def __init__(self, application: _Optional[_Union[Application, _Mapping]] = ...) -> None: ...

class Application(_message.Message):
    __slots__ = ("application_id", "name", "tags", "default_roles", "trusted", "admin", "personal_fields_allowed", "full_token", "minimum_security_level", "user_token_idle_timeout", "user_token_max_lifetime", "disabled", "create_time", "transform_sources", "data_key_group")
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_ROLES_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    PERSONAL_FIELDS_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    FULL_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_SECURITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    USER_TOKEN_IDLE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    USER_TOKEN_MAX_LIFETIME_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    TRANSFORM_SOURCES_FIELD_NUMBER: _ClassVar[int]
    DATA_KEY_GROUP_FIELD_NUMBER: _ClassVar[int]
    application_id: str
    name: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    default_roles: _containers.RepeatedCompositeFieldContainer[_common_pb2.Role]
    trusted: bool
    admin: bool
    personal_fields_allowed: bool
    full_token: bool
    minimum_security_level: int
    user_token_idle_timeout: _duration_pb2.Duration
    user_token_max_lifetime: _duration_pb2.Duration
    disabled: bool
    create_time: _timestamp_pb2.Timestamp
    transform_sources: _containers.RepeatedScalarFieldContainer[str]
    data_key_group: str
    def __init__(self, application_id: _Optional[str] = ..., name: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., default_roles: _Optional[_Iterable[_Union[_common_pb2.Role, _Mapping]]] = ..., trusted: _Optional[bool] = ..., admin: _Optional[bool] = ..., personal_fields_allowed: _Optional[bool] = ..., full_token: _Optional[bool] = ..., minimum_security_level: _Optional[int] = ..., user_token_idle_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., user_token_max_lifetime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., disabled: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., transform_sources: _Optional[_Iterable[str]] = ..., data_key_group: _Optional[str] = ...) -> None: ...

class User(_message.Message):
    __slots__ = ("uid", "username", "first_name", "last_name", "email", "cellphone", "person_ref", "disabled", "create_time")
    UID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    FIRST_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_NAME_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    CELLPHONE_FIELD_NUMBER: _ClassVar[int]
    PERSON_REF_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    uid: str
    username: str
    first_name: str
    last_name: str
    email: str
    cellphone: str
    person_ref: str
    disabled: bool
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, uid: _Optional[str] = ..., username: _Optional[str] = ..., first_name: _Optional[str] = ..., last_name: _Optional[str] = ..., email: _Optional[str] = ..., cellphone: _Optional[str] = ..., person_ref: _Optional[str] = ..., disabled: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LogonUserRequest(_message.Message):
    __slots__ = ("user_credential", "user_credential_jwe", "ticket_application_id")
    USER_CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    USER_CREDENTIAL_JWE_FIELD_NUMBER: _ClassVar[int]
    TICKET_APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    user_credential: UserCredential
    user_credential_jwe: str
    ticket_application_id: str
    def __init__(self, user_credential: _Optional[_Union[UserCredential, _Mapping]] = ..., user_credential_jwe: _Optional[str] = ..., ticket_application_id: _Optional[str] = ...) -> None: ...

class LogonUserResponse(_message.Message):
    __slots__ = ("user_token", "user_token_jwt", "user_ticket")
    USER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    USER_TOKEN_JWT_FIELD_NUMBER: _ClassVar[int]
    USER_TICKET_FIELD_NUMBER: _ClassVar[int]
    user_token: _common_pb2.UserToken
    user_token_jwt: str
    user_ticket: str
    def __init__(self, user_token: _Optional[_Union[_common_pb2.UserToken, _Mapping]] = ..., user_token_jwt: _Optional[str] = ..., user_ticket: _Optional[str] = ...) -> None: ...

class ValidateUserTokenRequest(_message.Message):
    __slots__ = ("user_token_id", "user_token_jwt")
    USER_TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    USER_TOKEN_JWT_FIELD_NUMBER: _ClassVar[int]
    user_token_id: str
    user_token_jwt: str
    def __init__(self, user_token_id: _Optional[str] = ..., user_token_jwt: _Optional[str] = ...) -> None: ...

class ValidateUserTokenResponse(_message.Message):
    __slots__ = ("active", "user_token")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    USER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    active: bool
    user_token: _common_pb2.UserToken
    def __init__(self, active: _Optional[bool] = ..., user_token: _Optional[_Union[_common_pb2.UserToken, _Mapping]] = ...) -> None: ...

class GetUserTokenByUserTokenIdRequest(_message.Message):
    __slots__ = ("user_token_id",)
    USER_TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    user_token_id: str
    def __init__(self, user_token_id: _Optional[str] = ...) -> None: ...

class GetUserTokenByUserTokenIdResponse(_message.Message):
    __slots__ = ("user_token", "user_token_jwt")
    USER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    USER_TOKEN_JWT_FIELD_NUMBER: _ClassVar[int]
    user_token: _common_pb2.UserToken
    user_token_jwt: str
    def __init__(self, user_token: _Optional[_Union[_common_pb2.UserToken, _Mapping]] = ..., user_token_jwt: _Optional[str] = ...) -> None: ...

class CreateUserTicketRequest(_message.Message):
    __slots__ = ("user_token_id", "ticket_application_id")
    USER_TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TICKET_APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    user_token_id: str
    ticket_application_id: str
    def __init__(self, user_token_id: _Optional[str] = ..., ticket_application_id: _Optional[str] = ...) -> None: ...

class CreateUserTicketResponse(_message.Message):
    __slots__ = ("user_ticket", "expire_time")
    USER_TICKET_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    user_ticket: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, user_ticket: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetUserTokenByUserTicketRequest(_message.Message):
    __slots__ = ("user_ticket",)
    USER_TICKET_FIELD_NUMBER: _ClassVar[int]
    user_ticket: str
    def __init__(self, user_ticket: _Optional[str] = ...) -> None: ...

class GetUserTokenByUserTicketResponse(_message.Message):
    __slots__ = ("user_token", "user_token_jwt")
    USER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    USER_TOKEN_JWT_FIELD_NUMBER: _ClassVar[int]
    user_token: _common_pb2.UserToken
    user_token_jwt: str
    def __init__(self, user_token: _Optional[_Union[_common_pb2.UserToken, _Mapping]] = ..., user_token_jwt: _Optional[str] = ...) -> None: ...

class RefreshUserTokenRequest(_message.Message):
    __slots__ = ("user_token_id",)
    USER_TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    user_token_id: str
    def __init__(self, user_token_id: _Optional[str] = ...) -> None: ...

class RefreshUserTokenResponse(_message.Message):
    __slots__ = ("user_token", "user_token_jwt")
    USER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    USER_TOKEN_JWT_FIELD_NUMBER: _ClassVar[int]
    user_token: _common_pb2.UserToken
    user_token_jwt: str
    def __init__(self, user_token: _Optional[_Union[_common_pb2.UserToken, _Mapping]] = ..., user_token_jwt: _Optional[str] = ...) -> None: ...

class ReleaseUserTokenRequest(_message.Message):
    __slots__ = ("user_token_id", "end_session")
    USER_TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    END_SESSION_FIELD_NUMBER: _ClassVar[int]
    user_token_id: str
    end_session: bool
    def __init__(self, user_token_id: _Optional[str] = ..., end_session: _Optional[bool] = ...) -> None: ...

class ReleaseUserTokenResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReleaseUserSessionsRequest(_message.Message):
    __slots__ = ("uid",)
    UID_FIELD_NUMBER: _ClassVar[int]
    uid: str
    def __init__(self, uid: _Optional[str] = ...) -> None: ...

class ReleaseUserSessionsResponse(_message.Message):
    __slots__ = ("released_count",)
    RELEASED_COUNT_FIELD_NUMBER: _ClassVar[int]
    released_count: int
    def __init__(self, released_count: _Optional[int] = ...) -> None: ...

class ListUserSessionsRequest(_message.Message):
    __slots__ = ("uid",)
    UID_FIELD_NUMBER: _ClassVar[int]
    uid: str
    def __init__(self, uid: _Optional[str] = ...) -> None: ...

class UserSession(_message.Message):
    __slots__ = ("session_ref", "application_id", "security_level", "issue_time", "expire_time", "absolute_expire_time", "participant_application_ids")
    SESSION_REF_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    SECURITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    ISSUE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    ABSOLUTE_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_APPLICATION_IDS_FIELD_NUMBER: _ClassVar[int]
    session_ref: str
    application_id: str
    security_level: int
    issue_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    absolute_expire_time: _timestamp_pb2.Timestamp
    participant_application_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session_ref: _Optional[str] = ..., application_id: _Optional[str] = ..., security_level: _Optional[int] = ..., issue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., absolute_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., participant_application_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ListUserSessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[UserSession]
    def __init__(self, sessions: _Optional[_Iterable[_Union[UserSession, _Mapping]]] = ...) -> None: ...

class StepUpProof(_message.Message):
    __slots__ = ("password", "password_jwe")
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_JWE_FIELD_NUMBER: _ClassVar[int]
    password: str
    password_jwe: str
    def __init__(self, password: _Optional[str] = ..., password_jwe: _Optional[str] = ...) -> None: ...

class TransformUserTokenRequest(_message.Message):
    __slots__ = ("user_token_id", "target_application_id", "step_up")
    USER_TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_UP_FIELD_NUMBER: _ClassVar[int]
    user_token_id: str
    target_application_id: str
    step_up: StepUpProof
    def __init__(self, user_token_id: _Optional[str] = ..., target_application_id: _Optional[str] = ..., step_up: _Optional[_Union[StepUpProof, _Mapping]] = ...) -> None: ...

class TransformUserTokenResponse(_message.Message):
    __slots__ = ("user_token", "user_token_jwt")
    USER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    USER_TOKEN_JWT_FIELD_NUMBER: _ClassVar[int]
    user_token: _common_pb2.UserToken
    user_token_jwt: str
    def __init__(self, user_token: _Optional[_Union[_common_pb2.UserToken, _Mapping]] = ..., user_token_jwt: _Optional[str] = ...) -> None: ...

class CreateUserFromThirdPartyTokenRequest(_message.Message):
    __slots__ = ("third_party_token", "ticket_application_id")
    THIRD_PARTY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TICKET_APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    third_party_token: str
    ticket_application_id: str
    def __init__(self, third_party_token: _Optional[str] = ..., ticket_application_id: _Optional[str] = ...) -> None: ...

class CreateUserFromThirdPartyTokenResponse(_message.Message):
    __slots__ = ("user_token", "user_token_jwt", "user_ticket", "user_created")
    USER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    USER_TOKEN_JWT_FIELD_NUMBER: _ClassVar[int]
    USER_TICKET_FIELD_NUMBER: _ClassVar[int]
    USER_CREATED_FIELD_NUMBER: _ClassVar[int]
    user_token: _common_pb2.UserToken
    user_token_jwt: str
    user_ticket: str
    user_created: bool
    def __init__(self, user_token: _Optional[_Union[_common_pb2.UserToken, _Mapping]] = ..., user_token_jwt: _Optional[str] = ..., user_ticket: _Optional[str] = ..., user_created: _Optional[bool] = ...) -> None: ...

class CreateApplicationRequest(_message.Message):
    __slots__ = ("application", "application_secret")
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_SECRET_FIELD_NUMBER: _ClassVar[int]
    application: Application
    application_secret: str
    def __init__(self, application: _Optional[_Union[Application, _Mapping]] = ..., application_secret: _Optional[str] = ...) -> None: ...

class CreateApplicationResponse(_message.Message):
    __slots__ = ("application", "application_secret")
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_SECRET_FIELD_NUMBER: _ClassVar[int]
    application: Application
    application_secret: str
    def __init__(self, application: _Optional[_Union[Application, _Mapping]] = ..., application_secret: _Optional[str] = ...) -> None: ...

class UpdateApplicationRequest(_message.Message):
    __slots__ = ("application", "update_mask", "application_secret", "generate_secret")
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_SECRET_FIELD_NUMBER: _ClassVar[int]
    GENERATE_SECRET_FIELD_NUMBER: _ClassVar[int]
    application: Application
    update_mask: _field_mask_pb2.FieldMask
    application_secret: str
    generate_secret: bool
    def __init__(self, application: _Optional[_Union[Application, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., application_secret: _Optional[str] = ..., generate_secret: _Optional[bool] = ...) -> None: ...

class UpdateApplicationResponse(_message.Message):
    __slots__ = ("application", "application_secret")
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_SECRET_FIELD_NUMBER: _ClassVar[int]
    application: Application
    application_secret: str
    def __init__(self, application: _Optional[_Union[Application, _Mapping]] = ..., application_secret: _Optional[str] = ...) -> None: ...

class ListApplicationsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListApplicationsResponse(_message.Message):
    __slots__ = ("applications",)
    APPLICATIONS_FIELD_NUMBER: _ClassVar[int]
    applications: _containers.RepeatedCompositeFieldContainer[Application]
    def __init__(self, applications: _Optional[_Iterable[_Union[Application, _Mapping]]] = ...) -> None: ...

class CreateUserRequest(_message.Message):
    __slots__ = ("user", "password")
    USER_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    user: User
    password: str
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ..., password: _Optional[str] = ...) -> None: ...

class CreateUserResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: User
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ...) -> None: ...

class UpdateUserRequest(_message.Message):
    __slots__ = ("user", "update_mask", "password")
    USER_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    user: User
    update_mask: _field_mask_pb2.FieldMask
    password: str
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., password: _Optional[str] = ...) -> None: ...

class UpdateUserResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: User
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ...) -> None: ...

class ListUsersRequest(_message.Message):
    __slots__ = ("username_prefix", "page_size", "page_token")
    USERNAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    username_prefix: str
    page_size: int
    page_token: str
    def __init__(self, username_prefix: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListUsersResponse(_message.Message):
    __slots__ = ("users", "next_page_token")
    USERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[User]
    next_page_token: str
    def __init__(self, users: _Optional[_Iterable[_Union[User, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AddUserRoleRequest(_message.Message):
    __slots__ = ("uid", "role")
    UID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    uid: str
    role: _common_pb2.Role
    def __init__(self, uid: _Optional[str] = ..., role: _Optional[_Union[_common_pb2.Role, _Mapping]] = ...) -> None: ...

class AddUserRoleResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RemoveUserRoleRequest(_message.Message):
    __slots__ = ("uid", "role")
    UID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    uid: str
    role: _common_pb2.Role
    def __init__(self, uid: _Optional[str] = ..., role: _Optional[_Union[_common_pb2.Role, _Mapping]] = ...) -> None: ...

class RemoveUserRoleResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
