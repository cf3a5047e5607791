"""STS client for Python.

The generated stubs live in ``sts_client.v1`` (``*_pb2`` messages with ``.pyi`` type stubs, ``*_pb2_grpc``
stubs, made by ``scripts/generate-python.sh``); around them:

- ``StsClient`` (grpcio) and ``AsyncStsClient`` (grpc.aio), with the same behaviour: TLS by default
  (``insecure=True`` for plaintext), the application logon at first use, renewal of the application token at
  80% of its lifetime, ``authorization: Bearer <token>`` on every call, a deadline on every call, retries of
  idempotent reads on UNAVAILABLE, and ``keys`` (the cached JWKS: ``encrypt_for``, ``encrypt_credential``,
  ``verify_token``, ``verify_user_token``).
- ``StsError``: a failed call as the gRPC status plus the STS error code from the trailing metadata
  ``sts-error-code`` and ``retry_after_ms`` from ``retry-after-ms``.

    from sts_client import StsClient, session_pb2

    with StsClient("sts.example.org:50051", application_id="shop", application_secret=secret) as sts:
        res = sts.session.LogonUser(session_pb2.LogonUserRequest(
            user_credential=session_pb2.UserCredential(username="dave", password="...")))
"""

from ._core import IDEMPOTENT_METHODS, StsClientEvent, StsError
from .aio import AsyncStsClient
from .client import StsClient
from .jwks import CREDENTIAL_JWE_TYP, USER_TOKEN_TYP, AsyncJwksCache, JwksCache, JwksError
from .v1 import (
    common_pb2,
    pop_pb2,
    pop_pb2_grpc,
    secret_pb2,
    secret_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
)

__all__ = [
    "AsyncJwksCache",
    "AsyncStsClient",
    "CREDENTIAL_JWE_TYP",
    "IDEMPOTENT_METHODS",
    "JwksCache",
    "JwksError",
    "StsClient",
    "StsClientEvent",
    "StsError",
    "USER_TOKEN_TYP",
    "common_pb2",
    "pop_pb2",
    "pop_pb2_grpc",
    "secret_pb2",
    "secret_pb2_grpc",
    "session_pb2",
    "session_pb2_grpc",
]
