"""Writes bearer.json: IdP bearer-token vectors made with an independent
JOSE implementation (PyJWT + cryptography, tests/requirements.txt).

Run: target/pyenv/bin/python tests/vectors/jwt/generate_bearer.py
The key is fixed (a P-256 scalar below), so the JWKS never changes; ECDSA
signatures are randomized, so tokens differ between runs but every
expected result holds for any run. Commit the output.
"""

import base64
import hashlib
import hmac
import json
import pathlib

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

NOW = 1_800_000_000
ISS = "https://idp.example.com/realms/corp"
CLIENT_ID = "portcullis"
API = "https://api.example.com"

key = ec.derive_private_key(0x1D5C_0FFEE_BADC0DE_12345678_9ABCDEF, ec.SECP256R1())
other = ec.derive_private_key(0x0BAD_BAD_BAD_5EED_42, ec.SECP256R1())
jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
jwk.update({"kid": "k1", "use": "sig", "alg": "ES256"})
jwks = {"keys": [jwk]}


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def claims(**edit):
    c = {"iss": ISS, "aud": CLIENT_ID, "sub": "svc-1", "email": "ci@example.com",
         "email_verified": True, "groups": ["deployers"], "iat": NOW - 60, "exp": NOW + 240}
    for k, v in edit.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def es256(c, kid="k1", signer=key):
    return jwt.encode(c, signer, algorithm="ES256", headers={"kid": kid})


def unsigned(header, c, sig=b""):
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(c).encode())}.{b64(sig)}"


def hs256_with_public_key(c):
    head = {"alg": "HS256", "kid": "k1"}
    signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(c).encode())}"
    mac = hmac.new(json.dumps(jwk).encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


vectors = [
    ("valid: aud is the client id", es256(claims()), "ok"),
    ("valid: aud list naming a bearer audience", es256(claims(aud=[API, "https://other.example.com"])), "ok"),
    ("valid: expired 14 s ago, within the 15 s skew", es256(claims(exp=NOW - 14)), "ok"),
    ("expired 15 s ago", es256(claims(exp=NOW - 15)), "Expired"),
    ("no exp", es256(claims(exp=None)), "Expired"),
    ("wrong issuer", es256(claims(iss="https://evil.example.com")), "Issuer"),
    ("issuer with a trailing slash", es256(claims(iss=ISS + "/")), "Issuer"),
    ("wrong audience", es256(claims(aud="another-client")), "Audience"),
    ("no audience", es256(claims(aud=None)), "Audience"),
    ("not before: in 60 s", es256(claims(nbf=NOW + 60)), "IssuedAt"),
    ("issued in 60 s", es256(claims(iat=NOW + 60)), "IssuedAt"),
    ("no subject", es256(claims(sub=None)), "Subject"),
    ("alg none", unsigned({"alg": "none"}, claims()), "Algorithm"),
    ("HS256 keyed with the public JWK", hs256_with_public_key(claims()), "Algorithm"),
    ("signed by another key under the published kid", es256(claims(), signer=other), "Signature"),
    ("unknown kid", es256(claims(), kid="k2", signer=other), "UnknownKey"),
    ("a back-channel logout token (a security event token)",
     es256(claims(events={"http://schemas.openid.net/event/backchannel-logout": {}}, jti="l1")), "Malformed"),
    ("a JWE (five parts)", "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..aaaa.bbbb.cccc", "Encrypted"),
]
out = {
    "now": NOW,
    "skew": 15,
    "issuer": ISS,
    "client_id": CLIENT_ID,
    "bearer_audiences": [API],
    "algorithms": ["ES256"],
    "jwks": jwks,
    "vectors": [{"name": n, "token": t, "expect": e} for n, t, e in vectors],
}
path = pathlib.Path(__file__).with_name("bearer.json")
path.write_text(json.dumps(out, indent=2) + "\n")
print(f"wrote {path}: {len(vectors)} vectors")
