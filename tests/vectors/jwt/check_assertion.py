"""Checks assertion.json with an independent implementation (PyJWT):
each token verifies with the JWK next to it and says exactly its claims.
Time checks are off: the vectors are dated 2027-01-15 (iat 1800000000).

Run: target/pyenv/bin/python tests/vectors/jwt/check_assertion.py
"""

import json
import pathlib

import jwt

v = json.loads(pathlib.Path(__file__).with_name("assertion.json").read_text())
for c in v["cases"]:
    key = jwt.PyJWK.from_dict(c["jwks"]["keys"][0])
    assert jwt.get_unverified_header(c["token"])["kid"] == key.key_id
    got = jwt.decode(c["token"], key.key, algorithms=[c["algorithm"]],
                     audience=v["audience"], issuer=v["issuer"],
                     options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})
    assert got == c["claims"], (got, c["claims"])
    print(f"{c['algorithm']}: ok")
