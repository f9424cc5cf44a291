"""Ed25519 signing with the host's OpenSSL libcrypto, through ctypes.

The agent signs every request it sends. The `cryptography` package would cost it about
10 MB of resident memory for that (its Rust core carries an OpenSSL of its own), while the
libcrypto that the standard `ssl` module links against is already mapped into the process.
OpenSSL 1.1.1 and later have raw Ed25519 keys::

    EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32)    the key
    EVP_PKEY_get_raw_public_key(pkey, out, &len)                      its public half
    EVP_MD_CTX_new; EVP_DigestSignInit(ctx, NULL, NULL, NULL, pkey);
      EVP_DigestSign(ctx, sig, &siglen, data, len); EVP_MD_CTX_free   one signature
    EVP_PKEY_free(pkey)                                               when the key goes
    EVP_PKEY_new_raw_public_key; EVP_DigestVerifyInit; EVP_DigestVerify
                                                                      a signature checked

The library is the libcrypto `_ssl` links against (found through the extension, whose
dependencies ctypes searches), else `ctypes.util.find_library("crypto")`, else the usual
sonames. A libcrypto without those functions, or one that cannot make an Ed25519 key (a
restricted build), raises SettingsError. The agent also verifies here the control plane's
signature on its desired state (security/desired_signature.py); the control plane verifies
device signatures with `cryptography` (security/keys.py).
"""

from __future__ import annotations

import ctypes
import functools
import weakref
from collections.abc import Iterator
from ctypes import POINTER, byref, c_char_p, c_int, c_size_t, c_ubyte, c_ulong, c_void_p
from typing import Any

from edgefleet.errors import SettingsError

EVP_PKEY_ED25519 = 1087  # NID_ED25519
SEED_BYTES = 32
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
_FALLBACK_NAMES = ("libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.dylib")

# name: (restype, argtypes), exactly as OpenSSL declares them.
_FUNCTIONS: dict[str, tuple[Any, list[Any]]] = {
    "EVP_PKEY_new_raw_private_key": (c_void_p, [c_int, c_void_p, c_char_p, c_size_t]),
    "EVP_PKEY_get_raw_public_key": (c_int, [c_void_p, POINTER(c_ubyte), POINTER(c_size_t)]),
    "EVP_PKEY_free": (None, [c_void_p]),
    "EVP_MD_CTX_new": (c_void_p, []),
    "EVP_MD_CTX_free": (None, [c_void_p]),
    "EVP_DigestSignInit": (c_int, [c_void_p, c_void_p, c_void_p, c_void_p, c_void_p]),
    "EVP_DigestSign": (
        c_int,
        [c_void_p, POINTER(c_ubyte), POINTER(c_size_t), c_char_p, c_size_t],
    ),
    "EVP_PKEY_new_raw_public_key": (c_void_p, [c_int, c_void_p, c_char_p, c_size_t]),
    "EVP_DigestVerifyInit": (c_int, [c_void_p, c_void_p, c_void_p, c_void_p, c_void_p]),
    "EVP_DigestVerify": (c_int, [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t]),
    "ERR_get_error": (c_ulong, []),
    "ERR_error_string_n": (None, [c_ulong, c_char_p, c_size_t]),
    "ERR_clear_error": (None, []),
}


class _LibCrypto:
    """The libcrypto functions this module calls, with their C signatures declared."""

    EVP_PKEY_new_raw_private_key: Any
    EVP_PKEY_get_raw_public_key: Any
    EVP_PKEY_free: Any
    EVP_MD_CTX_new: Any
    EVP_MD_CTX_free: Any
    EVP_DigestSignInit: Any
    EVP_DigestSign: Any
    EVP_PKEY_new_raw_public_key: Any
    EVP_DigestVerifyInit: Any
    EVP_DigestVerify: Any
    ERR_get_error: Any
    ERR_error_string_n: Any
    ERR_clear_error: Any

    def __init__(self, library: ctypes.CDLL, source: str) -> None:
        self.source = source
        for name, (restype, argtypes) in _FUNCTIONS.items():
            function = getattr(library, name)
            function.restype = restype
            function.argtypes = argtypes
            setattr(self, name, function)

    def last_error(self) -> str:
        """OpenSSL's oldest queued error as text; the queue is cleared so the `ssl` module
        never sees an error that is not its own."""
        code = self.ERR_get_error()
        self.ERR_clear_error()
        if not code:
            return "no error reported"
        text = ctypes.create_string_buffer(256)
        self.ERR_error_string_n(code, text, len(text))
        return text.value.decode(errors="replace")


def _candidates() -> Iterator[tuple[str, str]]:
    """(what to dlopen, how it was found), in order of preference."""
    try:
        import _ssl

        yield _ssl.__file__, "the libcrypto the ssl module links against"
    except (ImportError, AttributeError):
        pass
    import ctypes.util  # runs ldconfig: only when the ssl module's libcrypto will not do

    name = ctypes.util.find_library("crypto")
    if name:
        yield name, name
    yield from ((n, n) for n in _FALLBACK_NAMES if n != name)


@functools.cache
def load_libcrypto() -> _LibCrypto:
    """The host's libcrypto with raw Ed25519 keys (OpenSSL >= 1.1.1); SettingsError if
    there is none."""
    tried = []
    for path, source in _candidates():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            tried.append(source)
            continue
        if all(hasattr(library, name) for name in _FUNCTIONS):
            return _LibCrypto(library, source)
        tried.append(f"{source} (no raw Ed25519 keys: OpenSSL older than 1.1.1)")
    raise SettingsError(
        "device keys need OpenSSL's libcrypto 1.1.1 or newer for Ed25519 signatures; "
        f"tried: {', '.join(tried) or 'nothing found'}"
    )


class Ed25519SigningKey:
    """An Ed25519 private key held by libcrypto, freed when this object goes."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"an Ed25519 seed is {SEED_BYTES} bytes, not {len(seed)}")
        lib = load_libcrypto()
        pkey = lib.EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, None, seed, SEED_BYTES)
        if not pkey:
            raise SettingsError(
                f"{lib.source} cannot make an Ed25519 key ({lib.last_error()}); device keys "
                "need a libcrypto built with Ed25519"
            )
        self._lib = lib
        self._pkey: int = pkey
        finalizer = weakref.finalize(self, lib.EVP_PKEY_free, pkey)
        finalizer.atexit = False  # the process is ending: nothing to give back
        public = (c_ubyte * PUBLIC_KEY_BYTES)()
        length = c_size_t(PUBLIC_KEY_BYTES)
        if lib.EVP_PKEY_get_raw_public_key(pkey, public, byref(length)) != 1:
            raise SettingsError(f"{lib.source} cannot read an Ed25519 public key: "
                                f"{lib.last_error()}")  # fmt: skip
        self.public_key = bytes(public[: length.value])
        lib.ERR_clear_error()  # whatever OpenSSL queued while making the key is not news

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `data` (deterministic, as RFC 8032 says)."""
        lib = self._lib
        ctx = lib.EVP_MD_CTX_new()
        if not ctx:
            raise MemoryError("libcrypto could not allocate a signing context")
        try:
            signature = (c_ubyte * SIGNATURE_BYTES)()
            length = c_size_t(SIGNATURE_BYTES)
            if (
                lib.EVP_DigestSignInit(ctx, None, None, None, self._pkey) != 1
                or lib.EVP_DigestSign(ctx, signature, byref(length), data, len(data)) != 1
            ):
                raise SettingsError(f"{lib.source} failed to sign: {lib.last_error()}")
            return bytes(signature[: length.value])
        finally:
            lib.EVP_MD_CTX_free(ctx)


def ed25519_verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """Whether `signature` is `public_key`'s Ed25519 signature of `data`."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    lib = load_libcrypto()
    pkey = lib.EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, None, public_key, PUBLIC_KEY_BYTES)
    if not pkey:
        lib.ERR_clear_error()
        return False
    ctx = lib.EVP_MD_CTX_new()
    try:
        if not ctx:
            raise MemoryError("libcrypto could not allocate a verification context")
        ok: bool = (
            lib.EVP_DigestVerifyInit(ctx, None, None, None, pkey) == 1
            and lib.EVP_DigestVerify(ctx, signature, len(signature), data, len(data)) == 1
        )
        lib.ERR_clear_error()  # a bad signature queues an error that is not news
        return ok
    finally:
        if ctx:
            lib.EVP_MD_CTX_free(ctx)
        lib.EVP_PKEY_free(pkey)
