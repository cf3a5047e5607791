import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IdentityProvider(_message.Message):
    __slots__ = ("issuer", "jwks_uri", "jwks_json", "audiences", "algorithms", "clock_skew", "subject_claim", "security_level", "application_audiences", "tokens_without_jti", "accept_tokens_without_iat")
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    JWKS_URI_FIELD_NUMBER: _ClassVar[int]
    JWKS_JSON_FIELD_NUMBER: _ClassVar[int]
    AUDIENCES_FIELD_NUMBER: _ClassVar[int]
    ALGORITHMS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_SKEW_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_CLAIM_FIELD_NUMBER: _ClassVar[int]
    SECURITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_AUDIENCES_FIELD_NUMBER: _ClassVar[int]
    TOKENS_WITHOUT_JTI_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_TOKENS_WITHOUT_IAT_FIELD_NUMBER: _ClassVar[int]
    issuer: str
    jwks_uri: str
    jwks_json: str
    audiences: _containers.RepeatedScalarFieldContainer[str]
    algorithms: _containers.RepeatedScalarFieldContainer[str]
    clock_skew: _duration_pb2.Duration
    subject_claim: str
    security_level: int
    application_audiences: _containers.RepeatedCompositeFieldContainer[ApplicationAudiences]
    tokens_without_jti: bool
    accept_tokens_without_iat: bool
    def __init__(self, issuer: _Optional[str] = ..., jwks_uri: _Optional[str] = ..., jwks_json: _Optional[str] = ..., audiences: _Optional[_Iterable[str]] = ..., algorithms: _Optional[_Iterable[str]] = ..., clock_skew: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., subject_claim: _Optional[str] = ..., security_level: _Optional[int] = ..., application_audiences: _Optional[_Iterable[_Union[ApplicationAudiences, _Mapping]]] = ..., tokens_without_jti: _Optional[bool] = ..., accept_tokens_without_iat: _Optional[bool] = ...) -> None: ...

class ApplicationAudiences(_message.Message):
    __slots__ = ("application_id", "audiences")
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIENCES_FIELD_NUMBER: _ClassVar[int]
    application_id: str
    audiences: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, application_id: _Optional[str] = ..., audiences: _Optional[_Iterable[str]] = ...) -> None: ...

class ResourceServer(_message.Message):
    __slots__ = ("resource_server_id", "application_id", "certificate_sha256", "audiences", "jwks_uri", "jwks_json")
    RESOURCE_SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_SHA256_FIELD_NUMBER: _ClassVar[int]
    AUDIENCES_FIELD_NUMBER: _ClassVar[int]
    JWKS_URI_FIELD_NUMBER: _ClassVar[int]
    JWKS_JSON_FIELD_NUMBER: _ClassVar[int]
    resource_server_id: str
    application_id: str
    certificate_sha256: str
    audiences: _containers.RepeatedScalarFieldContainer[str]
    jwks_uri: str
    jwks_json: str
    def __init__(self, resource_server_id: _Optional[str] = ..., application_id: _Optional[str] = ..., certificate_sha256: _Optional[str] = ..., audiences: _Optional[_Iterable[str]] = ..., jwks_uri: _Optional[str] = ..., jwks_json: _Optional[str] = ...) -> None: ...

class GetUserSecretRequest(_message.Message):
    __slots__ = ("subject_token",)
    SUBJECT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    subject_token: str
    def __init__(self, subject_token: _Optional[str] = ...) -> None: ...

class GetUserSecretResponse(_message.Message):
    __slots__ = ("secret_jwe", "subject", "issuer", "recipient_kid", "create_time")
    SECRET_JWE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_KID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    secret_jwe: str
    subject: str
    issuer: str
    recipient_kid: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, secret_jwe: _Optional[str] = ..., subject: _Optional[str] = ..., issuer: _Optional[str] = ..., recipient_kid: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ExchangeTokenRequest(_message.Message):
    __slots__ = ("grant_type", "subject_token", "subject_token_type", "actor_token", "actor_token_type", "requested_token_type", "resource", "audience", "scope")
    GRANT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_TOKEN_TYPE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACTOR_TOKEN_TYPE_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_TOKEN_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    grant_type: str
    subject_token: str
    subject_token_type: str
    actor_token: str
    actor_token_type: str
    requested_token_type: str
    resource: _containers.RepeatedScalarFieldContainer[str]
    audience: _containers.RepeatedScalarFieldContainer[str]
    scope: str
    def __init__(self, grant_type: _Optional[str] = ..., subject_token: _Optional[str] = ..., subject_token_type: _Optional[str] = ..., actor_token: _Optional[str] = ..., actor_token_type: _Optional[str] = ..., requested_token_type: _Optional[str] = ..., resource: _Optional[_Iterable[str]] = ..., audience: _Optional[_Iterable[str]] = ..., scope: _Optional[str] = ...) -> None: ...

class ExchangeTokenResponse(_message.Message):
    __slots__ = ("access_token", "issued_token_type", "token_type", "expires_in", "scope")
    ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ISSUED_TOKEN_TYPE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    access_token: str
    issued_token_type: str
    token_type: str
    expires_in: int
    scope: str
    def __init__(self, access_token: _Optional[str] = ..., issued_token_type: _Optional[str] = ..., token_type: _Optional[str] = ..., expires_in: _Optional[int] = ..., scope: _Optional[str] = ...) -> None: ...

class PutIdentityProviderRequest(_message.Message):
    __slots__ = ("identity_provider",)
    IDENTITY_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    identity_provider: IdentityProvider
    def __init__(self, identity_provider: _Optional[_Union[IdentityProvider, _Mapping]] = ...) -> None: ...

class PutIdentityProviderResponse(_message.Message):
    __slots__ = ("identity_provider",)
    IDENTITY_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    identity_provider: IdentityProvider
    def __init__(self, identity_provider: _Optional[_Union[IdentityProvider, _Mapping]] = ...) -> None: ...

class ListIdentityProvidersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListIdentityProvidersResponse(_message.Message):
    __slots__ = ("identity_providers",)
    IDENTITY_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    identity_providers: _containers.RepeatedCompositeFieldContainer[IdentityProvider]
    def __init__(self, identity_providers: _Optional[_Iterable[_Union[IdentityProvider, _Mapping]]] = ...) -> None: ...

class DeleteIdentityProviderRequest(_message.Message):
    __slots__ = ("issuer",)
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    issuer: str
    def __init__(self, issuer: _Optional[str] = ...) -> None: ...

class DeleteIdentityProviderResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PutResourceServerRequest(_message.Message):
    __slots__ = ("resource_server",)
    RESOURCE_SERVER_FIELD_NUMBER: _ClassVar[int]
    resource_server: ResourceServer
    def __init__(self, resource_server: _Optional[_Union[ResourceServer, _Mapping]] = ...) -> None: ...

class PutResourceServerResponse(_message.Message):
    __slots__ = ("resource_server",)
    RESOURCE_SERVER_FIELD_NUMBER: _ClassVar[int]
    resource_server: ResourceServer
    def __init__(self, resource_server: _Optional[_Union[ResourceServer, _Mapping]] = ...) -> None: ...

class ListResourceServersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListResourceServersResponse(_message.Message):
    __slots__ = ("resource_servers",)
    RESOURCE_SERVERS_FIELD_NUMBER: _ClassVar[int]
    resource_servers: _containers.RepeatedCompositeFieldContainer[ResourceServer]
    def __init__(self, resource_servers: _Optional[_Iterable[_Union[ResourceServer, _Mapping]]] = ...) -> None: ...

class DeleteResourceServerRequest(_message.Message):
    __slots__ = ("resource_server_id",)
    RESOURCE_SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    resource_server_id: str
    def __init__(self, resource_server_id: _Optional[str] = ...) -> None: ...

class DeleteResourceServerResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
