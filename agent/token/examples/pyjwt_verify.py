"""Verifies an infergate token with PyJWT against the JWKS it came with (stdin: mint_sample's JSON).

Needs `pip install 'pyjwt[crypto]'`. Exits non-zero on any failure; prints the checked claims' names.
"""
import json
import sys

import jwt

sample = json.load(sys.stdin)
token, config = sample["token"], sample["openid_configuration"]
jwks = jwt.PyJWKSet.from_dict(sample["jwks"])
kid = jwt.get_unverified_header(token)["kid"]
assert kid == sample["kid"], (kid, sample["kid"])
key = next(k for k in jwks.keys if k.key_id == kid)
claims = jwt.decode(
    token,
    key,
    algorithms=config["id_token_signing_alg_values_supported"],
    audience=sample["audience"],
    issuer=config["issuer"],
    options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
)
assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
print("pyjwt", jwt.__version__, "verified kid", kid, "claims", sorted(claims))
