#!/usr/bin/env python3
"""Check the signature of signalbox envelopes (docs/PROTOCOL.md section 12).

    python3 verify.py --trust DIR [FILE]      # one envelope per line; stdin without FILE

Prints one line per envelope: `valid SIGNER`, `invalid SIGNER: why` or
`unsigned`, and exits 1 if any was not valid. DIR holds the signers' public
keys as `signalbox keygen` writes them (`NAME.pub`:
`signalbox-ed25519 NAME BASE64`).

Needs: pip install cryptography
"""

import argparse
import base64
import json
import pathlib
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def load_trust(directory: str) -> dict:
    """Signer name -> public key, from every *.pub file of `directory`."""
    keys = {}
    for path in sorted(pathlib.Path(directory).glob("*.pub")):
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            tag, name, key = line.split()
            if tag != "signalbox-ed25519":
                raise ValueError(f"{path}: not a signalbox public key")
            keys[name] = Ed25519PublicKey.from_public_bytes(base64.b64decode(key))
    return keys


def canonical(envelope: dict) -> bytes:
    """The bytes a signature covers: the envelope without `sig`, keys sorted
    at every level, no whitespace, non-ASCII as UTF-8 (integers only: see
    PROTOCOL.md on other numbers)."""
    unsigned = {k: v for k, v in envelope.items() if k != "sig"}
    return json.dumps(
        unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def verify(envelope: dict, keys: dict) -> str:
    sig = envelope.get("sig")
    if sig is None:
        return "unsigned"
    signer = sig.get("signer") if isinstance(sig, dict) else None
    if not isinstance(signer, str) or sig.get("alg") != "ed25519":
        return f"invalid {signer}: malformed sig"
    key = keys.get(signer)
    if key is None:
        return f"invalid {signer}: unknown signer"
    try:
        key.verify(base64.b64decode(sig["value"]), canonical(envelope))
    except (InvalidSignature, ValueError, KeyError):
        return f"invalid {signer}: content does not match the signature"
    return f"valid {signer}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trust", required=True, help="directory of *.pub keys")
    parser.add_argument("file", nargs="?", help="envelopes, one per line")
    args = parser.parse_args()
    keys = load_trust(args.trust)
    lines = open(args.file, encoding="utf-8") if args.file else sys.stdin
    ok = True
    for line in lines:
        if not line.strip():
            continue
        verdict = verify(json.loads(line), keys)
        ok = ok and verdict.startswith("valid ")
        print(verdict)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
