"""Hybrid public-key encryption for model updates and global models (the `cryptography` library).

Weights are far larger than one RSA block, so a message is sealed the standard hybrid way: a
fresh random AES-256 key encrypts the payload with AES-GCM (confidentiality and integrity),
and RSA-OAEP (3072-bit, SHA-256, MGF1-SHA-256) encrypts that key to the recipient. Nothing is
hand-rolled: both primitives come from `cryptography`.

``context`` is GCM's associated data: it binds a sealed message to what it is for (``update of
participant p for round r``), so a ciphertext replayed for another round or another
participant fails to open, although the attacker cannot read it either way.

Sealed form (msgpack map): ``{"v": 1, "key": recipient key id, "ek": RSA-encrypted AES key,
"nonce": 12 bytes, "ct": AES-GCM ciphertext with its tag}``.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BITS = 3072
SEALED_FORMAT = 1
NONCE_BYTES = 12
MAX_PUBLIC_KEY_BYTES = 1024
"""A 3072-bit SubjectPublicKeyInfo in DER is 422 bytes."""

_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(),
                     label=None)


class CryptoError(Exception):
    """A key or a sealed message is unusable: malformed, for another key, or tampered with."""


def generate_private_key() -> RSAPrivateKey:
    """A fresh RSA key; takes up to ~0.6 s, so callers run it in a worker thread."""
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


def public_der(key: RSAPrivateKey) -> bytes:
    """The public half as DER SubjectPublicKeyInfo: what goes through the log."""
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public(der: Any) -> RSAPublicKey:
    """Parse a DER public key; only RSA keys of ``KEY_BITS`` bits are accepted."""
    if not isinstance(der, bytes) or len(der) > MAX_PUBLIC_KEY_BYTES:
        raise CryptoError("a public key is at most 1024 bytes of DER")
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CryptoError(f"not a DER public key: {exc}") from None
    if not isinstance(key, RSAPublicKey) or key.key_size != KEY_BITS:
        raise CryptoError(f"the public key must be RSA-{KEY_BITS}")
    return key


def key_id(der: bytes) -> str:
    """A short, stable name of a public key (SHA-256 of its DER, 16 hex digits)."""
    return hashlib.sha256(der).hexdigest()[:16]


def seal(recipient: RSAPublicKey, plaintext: bytes, context: bytes) -> bytes:
    """Encrypt ``plaintext`` so that only the holder of ``recipient``'s private key reads it."""
    aes_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(NONCE_BYTES)
    der = recipient.public_bytes(serialization.Encoding.DER,
                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    sealed: bytes = msgpack.packb({
        "v": SEALED_FORMAT,
        "key": key_id(der),
        "ek": recipient.encrypt(aes_key, _OAEP),
        "nonce": nonce,
        "ct": AESGCM(aes_key).encrypt(nonce, plaintext, context),
    }, use_bin_type=True)
    return sealed


def sealed_key_id(sealed: Any) -> str:
    """The key id a sealed message names (unauthenticated: a hint to pick the right key)."""
    name: str = _unpack(sealed)["key"]
    return name


def open_sealed(key: RSAPrivateKey, sealed: Any, context: bytes) -> bytes:
    """Decrypt `seal` output; `CryptoError` if it was sealed to another key or for another
    context, or was altered."""
    fields = _unpack(sealed)
    try:
        aes_key = key.decrypt(fields["ek"], _OAEP)
        return AESGCM(aes_key).decrypt(fields["nonce"], fields["ct"], context)
    except (ValueError, InvalidTag):
        raise CryptoError("cannot open the sealed message: wrong key, wrong context or "
                          "tampered with") from None


def _unpack(sealed: Any) -> dict[str, Any]:
    if not isinstance(sealed, bytes):
        raise CryptoError("a sealed message is bytes")
    try:
        fields = msgpack.unpackb(sealed, raw=False)
    except Exception:  # noqa: BLE001 - msgpack raises many types on garbage
        raise CryptoError("a sealed message is a msgpack map") from None
    if (not isinstance(fields, dict) or fields.get("v") != SEALED_FORMAT
            or not isinstance(fields.get("key"), str) or not isinstance(fields.get("ek"), bytes)
            or not isinstance(fields.get("ct"), bytes)
            or not isinstance(fields.get("nonce"), bytes)
            or len(fields["nonce"]) != NONCE_BYTES):
        raise CryptoError("malformed sealed message")
    return fields
