"""Uses STS from standard Python JOSE libraries, through STS's HTTP endpoints only.

PyJWT's PyJWKClient fetches the keys from the jwks_uri named by STS's discovery document and PyJWT verifies
user tokens with them; jwcrypto encrypts to STS's POP key. test/interop.test.ts drives it.

It reads one JSON request per line on stdin and writes one JSON answer per line on stdout:

    {"op":"verify","token":"<JWT>","issuer":"...","audience":"..."} -> {"ok":true,"kid":"...","claims":{...}}
    {"op":"encrypt","text":"..."}                                 -> {"ok":true,"kid":"...","jwe":"..."}

A refusal is {"ok":false,"error":"..."}. The key cache is PyJWKClient's own: on a token signed by an unknown
kid it fetches the JWKS again, at most once per cooldown.

Environment: STS_DISCOVERY_URL, the URL of /.well-known/openid-configuration; STS_JWKS_COOLDOWN_S, the
cooldown between refreshes on unknown kids (PyJWKClient's default, 30 s, when unset).
"""

import json
import os
import sys
import urllib.request

import jwt
from jwcrypto import jwe, jwk

# The "typ" of STS user tokens (RFC 8725 section 3.11): a JWS an application had STS sign through
# PopService.Sign never has it.
USER_TOKEN_TYPE = "sts-user+jwt"


def discovery(url):
    with urllib.request.urlopen(url, timeout=30) as res:
        doc = json.load(res)
    if not doc.get("jwks_uri") or not doc.get("id_token_signing_alg_values_supported"):
        raise ValueError("discovery: no jwks_uri or no signing algorithms")
    return doc


def verify(client, algorithms, req):
    """Signature (with an algorithm STS publishes), typ, iss, aud and exp of a user token."""
    token = req["token"]
    key = client.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key,
        algorithms=algorithms,
        issuer=req["issuer"],
        audience=req["audience"],
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        leeway=60,
    )
    # The signature covers the header, and it verified above.
    header = jwt.get_unverified_header(token)
    if header.get("typ") != USER_TOKEN_TYPE:
        raise ValueError(f"typ {header.get('typ')!r} is not {USER_TOKEN_TYPE!r}")
    return {"ok": True, "kid": header["kid"], "claims": claims}


def encrypt(client, req):
    """A compact JWE of the text to the first encryption key of the JWKS: STS lists its PRIMARY key first.

    PyJWKClient keeps only the keys PyJWT can verify with, so the encryption key comes from the JWKS
    document it fetches (fetch_data).
    """
    keys = client.fetch_data()["keys"]
    target = next((k for k in keys if k.get("use") == "enc"), None)
    if target is None:
        raise ValueError("the JWKS has no encryption key")
    header = {"alg": target["alg"], "enc": "A256GCM", "kid": target["kid"], "cty": "text/plain"}
    token = jwe.JWE(req["text"].encode("utf-8"), protected=json.dumps(header))
    token.add_recipient(jwk.JWK(**target))
    return {"ok": True, "kid": target["kid"], "jwe": token.serialize(compact=True)}


def main():
    doc = discovery(os.environ["STS_DISCOVERY_URL"])
    client = jwt.PyJWKClient(doc["jwks_uri"], cooldown_duration=float(os.environ.get("STS_JWKS_COOLDOWN_S", "30")))
    algorithms = doc["id_token_signing_alg_values_supported"]
    for line in sys.stdin:
        try:
            req = json.loads(line)
            if req.get("op") == "verify":
                answer = verify(client, algorithms, req)
            elif req.get("op") == "encrypt":
                answer = encrypt(client, req)
            else:
                answer = {"ok": False, "error": f"unknown op {req.get('op')!r}"}
        except Exception as err:  # every refusal is reported, and the next request still served
            answer = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
