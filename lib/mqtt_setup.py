"""What an MQTTClient needs once, before its TLS handshake: the TLS context
set-up and the CONNECT packet (and the check that there is TLS). Loaded by
mqtt.tls_context() and MQTTClient(), and let go by connect() before the
handshake, so that this code is no heap the handshake and the batch could use
(bench/uplink.py measures that heap). It imports nothing of mqtt's: what it
needs of it comes as arguments.
"""


def context(tls, context, ca, cert, key, psk_identity, psk_key):
    """mqtt.tls_context() made the tls.SSLContext; this sets it up."""
    if psk_key is None and ca is None:
        raise ValueError("a CA is needed (plain TCP: insecure=True)")
    if psk_key is not None:
        # No certificate exists in PSK mode: the shared key authenticates both
        # ends, and only PSK suites are offered.
        context.verify_mode = tls.CERT_NONE
        context.psk_identity = psk_identity
        context.psk_key = psk_key
        psk = []
        for c in context.get_ciphers():
            if c.startswith("TLS-PSK-WITH-"):  # not DHE- or ECDHE-PSK
                psk.append(c)
        context.set_ciphers(psk)
        return context
    context.verify_mode = tls.CERT_REQUIRED
    if tls.__name__ == "tls":
        context.load_verify_locations(ca)  # MicroPython's takes the certificate data itself
    else:
        context.load_verify_locations(cadata=ca)
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def connect(_head, _str, ssl_context, insecure, client_id, keepalive, clean, will, user, password):
    """The CONNECT packet, the same at every connect of a client; ValueError
    without TLS unless insecure. _head, _str: mqtt's, handed in. Named and
    with parameters named as in MQTTClient(): names that are qstrs already."""
    if ssl_context is None and not insecure:
        raise ValueError("MQTT needs a TLS context (or insecure=True)")
    flags = 2 if clean else 0
    p = _str(client_id)
    if will:  # (topic, message, retain), sent QoS 1
        flags |= 0x0C | (0x20 if will[2] else 0)
        p += _str(will[0]) + _str(will[1])
    if user is not None:
        flags |= 0x80
        p += _str(user)
    if password is not None:
        flags |= 0x40
        p += _str(password)
    p = b"\0\4MQTT\4" + bytes((flags,)) + bytes((keepalive >> 8, keepalive & 255)) + p
    return _head(0x10, len(p)) + p

