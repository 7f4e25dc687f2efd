"""Mints the tokens that src/policy/token.rs checks relayd against an independent JWT
implementation (PyJWT; Debian's python3-jwt, with python3-cryptography for RS256, ES256 and
EdDSA). Run from this folder: python3 pyjwt-mint.py. Prints one line per token, `ALG TOKEN`.

The claims are fixed (exp is 2100-01-01) so that the tokens printed once are embedded in the
test; the test also runs this script when a Python with PyJWT is at hand, since ES256
signatures differ on every run and a current PyJWT may encode differently."""
import jwt

SECRET = "test-only-hs256-secret-0123456789abcdef"
FULL = {"sub": "u-42", "name": "alice", "rooms": ["lobby", "dev"], "role": "mod",
        "exp": 4102444800, "nbf": 1700000000, "iat": 1700000000,
        "aud": "relayd", "iss": "https://app.example"}
PLAIN = {"sub": "u-7", "exp": 4102444800}

print("HS256", jwt.encode(FULL, SECRET, algorithm="HS256", headers={"kid": "2026-01"}))
for alg, key in (("RS256", "rsa.key"), ("ES256", "ec.key"), ("EdDSA", "ed.key")):
    with open(key) as f:
        print(alg, jwt.encode(PLAIN, f.read(), algorithm=alg))
