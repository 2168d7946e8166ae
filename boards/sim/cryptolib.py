"""`cryptolib` of the ESP32 port for CPython: AES as
extmod/modcryptolib.c has it on a port with TLS, MICROPY_PY_CRYPTOLIB on,
CTR and the MODE_* constants off (py/mpconfig.h defaults): so modes 1 (ECB)
and 2 (CBC) by number, a 16- or 32-byte key, encrypt/decrypt of whole
16-byte blocks, one direction per object. Backed by a real AES
(`cryptography`), so a wrong key or IV gives the wrong bytes, as on the chip.
On the MicroPython VM this file is found on the path before the built-in
(cryptolib is an extensible module) and hands out the VM's own.
"""

import sys

if sys.implementation.name == "micropython":
    from ucryptolib import aes  # noqa: F401  the VM's built-in, by its other name
else:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class _CPythonAES:
    def __init__(self, key, mode, IV=None):  # noqa: N803
        if len(key) not in (16, 32):
            raise ValueError("key")
        if mode == 1:
            m = modes.ECB()
        elif mode == 2:
            if IV is None or len(IV) != 16:
                raise ValueError("IV")  # the port: a CBC IV of 16 bytes, or its default of zeros
            m = modes.CBC(bytes(IV))
        else:
            raise ValueError("mode")
        self._cipher = Cipher(algorithms.AES(bytes(key)), m)
        self._enc = self._dec = None

    def _run(self, which, data, out):
        if len(data) % 16:
            raise ValueError("blksize % 16")
        if which == "e":
            if self._dec is not None:
                raise ValueError("can't encrypt & decrypt")
            self._enc = self._enc or self._cipher.encryptor()
            res = self._enc.update(bytes(data))
        else:
            if self._enc is not None:
                raise ValueError("can't encrypt & decrypt")
            self._dec = self._dec or self._cipher.decryptor()
            res = self._dec.update(bytes(data))
        if out is None:
            return res
        out[:len(res)] = res
        return None

    def encrypt(self, data, out=None):
        return self._run("e", data, out)

    def decrypt(self, data, out=None):
        return self._run("d", data, out)


if sys.implementation.name != "micropython":
    aes = _CPythonAES  # noqa: N816  the port's name
