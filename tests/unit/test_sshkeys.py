"""SSH public keys as users paste them: what is accepted, how it is stored, what is refused."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from hutch.core.errors import InvalidInput
from hutch.core.sshkeys import MAX_KEYS, merge_keys, normalise_key, normalise_keys


def _openssh(key: object) -> str:
    public = key.public_key()  # type: ignore[attr-defined]
    return public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


ED = _openssh(ed25519.Ed25519PrivateKey.generate())
ED2 = _openssh(ed25519.Ed25519PrivateKey.generate())
RSA = _openssh(rsa.generate_private_key(public_exponent=65537, key_size=2048))
ECDSA = _openssh(ec.generate_private_key(ec.SECP256R1()))


def test_keys_are_normalised_with_their_comment() -> None:
    assert normalise_key(f"  {ED}   alice@laptop  \n") == f"{ED} alice@laptop"
    assert normalise_key(f"{RSA}\tci  key") == f"{RSA} ci key"
    assert normalise_key(ECDSA) == ECDSA


def test_duplicates_are_dropped_whatever_their_comment() -> None:
    keys = normalise_keys([f"{ED} one", ED2, f"{ED} two", ED2])
    assert keys == [f"{ED} one", ED2]
    assert merge_keys(keys, [ED, RSA]) == [f"{ED} one", ED2, RSA]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("hello world", "not an OpenSSH public key"),
        ("ssh-ed25519", "missing"),
        ("ssh-ed25519 !!!notbase64", "base64"),
        (f'command="rm -rf /" {ED}', "options"),
        (f'from="10.0.0.1" {ED}', "options"),
        (f"{ED}\n{ED2}", "one line"),
        (f"ssh-rsa {ED.split()[1]}", "not a ssh-rsa key"),
        (f"ssh-ed25519 {base64.b64encode(b'garbage').decode()}", "not a ssh-ed25519 key"),
        (ED[:-8], "key"),
        (f"{ED} bad\x07comment", "control characters"),
    ],
)
def test_bad_keys_are_refused_with_a_reason(text: str, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        normalise_key(text)
    assert caught.value.field == "ssh_pubkeys"
    assert says in caught.value.message


def test_short_rsa_keys_are_refused() -> None:
    weak = _openssh(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(InvalidInput, match="at least 2048 bits"):
        normalise_key(weak)


def test_a_sandbox_holds_a_bounded_number_of_keys() -> None:
    many = [_openssh(ed25519.Ed25519PrivateKey.generate()) for _ in range(MAX_KEYS + 1)]
    assert len(normalise_keys(many[:MAX_KEYS])) == MAX_KEYS
    with pytest.raises(InvalidInput, match=f"at most {MAX_KEYS}"):
        normalise_keys(many)
