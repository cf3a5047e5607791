#!/usr/bin/env python3
"""Calls STS with the Python client (sts_client): the application logs on, a user logs on, the user's token is
validated, handed over with a one-time ticket and logged out, and the JWKS is fetched; when given a subject
token it also asks for the user's secret. Prints one JSON object with every result (protobuf JSON names,
camelCase) on stdout.

    python example.py --address sts.example.org:50051 --ca-file ca.pem --app-id shop --app-secret ... \\
        --username dave --password ...

Every flag also has an environment variable: STSCLIENT_ADDRESS, STSCLIENT_APP_ID, STSCLIENT_APP_SECRET,
STSCLIENT_USERNAME, STSCLIENT_PASSWORD, STSCLIENT_SUBJECT_TOKEN, STSCLIENT_CA_FILE and STSCLIENT_INSECURE
(true: plaintext, for development). They are not STS_*: that namespace is the server's, which refuses
variables it does not know. The connection uses TLS with grpc's default roots unless --ca-file or --insecure
says otherwise. A failing step prints the gRPC status and the STS error code (trailing metadata
sts-error-code) on stderr and exits 1; the optional GetUserSecret step reports its failure in the JSON
instead ("userSecret": {"error": ...}), since not every deployment serves it.
"""

import argparse
import json
import os
import sys

from google.protobuf.json_format import MessageToDict

from sts_client import StsClient, StsError, pop_pb2, secret_pb2, session_pb2


def main() -> int:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--address", default=env("STSCLIENT_ADDRESS", "127.0.0.1:50051"), help="STS address host:port")
    p.add_argument("--app-id", default=env("STSCLIENT_APP_ID", ""), help="application id")
    p.add_argument("--app-secret", default=env("STSCLIENT_APP_SECRET", ""), help="application secret")
    p.add_argument("--username", default=env("STSCLIENT_USERNAME", ""), help="username of the user to log on")
    p.add_argument("--password", default=env("STSCLIENT_PASSWORD", ""), help="password of the user")
    p.add_argument("--subject-token", default=env("STSCLIENT_SUBJECT_TOKEN", ""),
                   help="optional: a user's token from a trusted identity provider; calls GetUserSecret with it")
    p.add_argument("--ca-file", default=env("STSCLIENT_CA_FILE", ""),
                   help="optional: PEM CA bundle that signed STS's certificate (default: grpc's roots)")
    p.add_argument("--insecure", action="store_true", default=env("STSCLIENT_INSECURE", "") == "true",
                   help="plaintext instead of TLS (development only)")
    p.add_argument("--timeout", type=float, default=10.0, help="deadline of each call, seconds")
    args = p.parse_args()
    if not (args.app_id and args.app_secret and args.username and args.password):
        print("example: --app-id, --app-secret, --username and --password (or STSCLIENT_APP_ID, "
              "STSCLIENT_APP_SECRET, STSCLIENT_USERNAME, STSCLIENT_PASSWORD) are required", file=sys.stderr)
        return 64

    ca = None
    if args.ca_file and not args.insecure:
        with open(args.ca_file, "rb") as f:
            ca = f.read()
    out = {}
    step = "LogonApplication"
    with StsClient(args.address, application_id=args.app_id, application_secret=args.app_secret,
                   insecure=args.insecure, root_certificates=ca, timeout=args.timeout) as sts:
        try:
            # 1. The application logs on (the client does it at first use; here explicitly).
            out["applicationToken"] = MessageToDict(sts.logon())

            # 2. A user logs on through the application (the client sends the application token).
            step = "LogonUser"
            user = sts.session.LogonUser(session_pb2.LogonUserRequest(
                user_credential=session_pb2.UserCredential(username=args.username, password=args.password)))
            out["userLogon"] = MessageToDict(user)

            # 3. The user's token is validated (here by its signed JWT; by id works too).
            step = "ValidateUserToken"
            valid = sts.session.ValidateUserToken(session_pb2.ValidateUserTokenRequest(user_token_jwt=user.user_token_jwt))
            out["validate"] = MessageToDict(valid)

            # 4. Handover: a one-time ticket for the session (here for this application), redeemed once.
            step = "CreateUserTicket"
            ticket = sts.session.CreateUserTicket(session_pb2.CreateUserTicketRequest(user_token_id=user.user_token.user_token_id))
            out["ticket"] = MessageToDict(ticket)
            step = "GetUserTokenByUserTicket"
            out["handover"] = MessageToDict(sts.session.GetUserTokenByUserTicket(
                session_pb2.GetUserTokenByUserTicketRequest(user_ticket=ticket.user_ticket)))

            # 5. Logout: the session ends at once; validating it again says so.
            step = "ReleaseUserToken"
            sts.session.ReleaseUserToken(session_pb2.ReleaseUserTokenRequest(user_token_id=user.user_token.user_token_id))
            step = "ValidateUserToken"
            after = sts.session.ValidateUserToken(session_pb2.ValidateUserTokenRequest(user_token_id=user.user_token.user_token_id))
            out["afterLogout"] = {"active": after.active}

            # 6. STS's public keys (anonymous).
            step = "GetJwks"
            out["jwks"] = MessageToDict(sts.pop.GetJwks(pop_pb2.GetJwksRequest()))
        except StsError as e:
            print(f"example: {step} failed: {e.details} (gRPC {e.code.value[0]} {e.code.name}, "
                  f"sts-error-code {e.sts_code!r})", file=sys.stderr)
            return 1

        # 7. Optional: the user's secret for a resource server, from a third-party subject token.
        if args.subject_token:
            try:
                res = sts.secret.GetUserSecret(secret_pb2.GetUserSecretRequest(subject_token=args.subject_token))
                out["userSecret"] = MessageToDict(res)
            except StsError as e:
                error = {"code": e.code.value[0], "codeName": e.code.name, "message": e.details, "stsErrorCode": e.sts_code}
                if e.retry_after_ms is not None:
                    error["retryAfterMs"] = str(e.retry_after_ms)
                out["userSecret"] = {"error": error}

    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
