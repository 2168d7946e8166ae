"""The common MicroPython MQTT client's way of working, reproduced for
bench/uplink.py: the methods and the socket writes of micropython-lib's
umqtt.simple (1.8.0), written here because the bench machine cannot fetch
it and a copy is not ours to commit.

What matters for the comparison, kept as umqtt.simple does it:
- a packet goes out in pieces: CONNECT as fixed header, variable header,
  then each string as its length and its bytes (4 writes); PUBLISH as fixed
  header, topic length, topic, packet id, message (5 writes);
- one QoS 1 publish at a time, each waiting for its PUBACK;
- no TCP_NODELAY on its socket (`usocket`, the TLS wrap after connect);
- the same set of methods (callback, last will, ping, subscribe, check_msg),
  so its code takes the heap the real module's does.
Runs on MicroPython only.
"""

import usocket as socket
import ustruct as struct


class MQTTException(Exception):
    pass


class MQTTClient:
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0, ssl=None):
        self.client_id = client_id
        self.server = server
        self.port = port or (8883 if ssl else 1883)
        self.ssl = ssl
        self.sock = None
        self.pid = 0
        self.cb = None
        self.user = user
        self.pswd = password
        self.keepalive = keepalive
        self.lw_topic = None
        self.lw_msg = None
        self.lw_qos = 0
        self.lw_retain = False

    def _send_str(self, s):  # two writes: the length, then the bytes
        self.sock.write(struct.pack("!H", len(s)))
        self.sock.write(s)

    def _recv_len(self):
        n = 0
        shift = 0
        while True:
            b = self.sock.read(1)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7

    def set_callback(self, f):
        self.cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.lw_topic = topic
        self.lw_msg = msg
        self.lw_qos = qos
        self.lw_retain = retain

    def connect(self, clean_session=True):
        self.sock = socket.socket()
        self.sock.connect(socket.getaddrinfo(self.server, self.port)[0][-1])
        if self.ssl:
            self.sock = self.ssl.wrap_socket(self.sock, server_hostname=self.server)
        head = bytearray(b"\x10\0\0\0\0\0")
        var = bytearray(b"\x04MQTT\x04\x02\0\0")
        size = 12 + len(self.client_id)
        var[6] = clean_session << 1
        if self.user:
            size += 4 + len(self.user) + len(self.pswd)
            var[6] |= 0xC0
        if self.keepalive:
            var[7] |= self.keepalive >> 8
            var[8] |= self.keepalive & 0xFF
        if self.lw_topic:
            size += 4 + len(self.lw_topic) + len(self.lw_msg)
            var[6] |= 0x4 | (self.lw_qos & 1) << 3 | (self.lw_qos & 2) << 3 | self.lw_retain << 5
        i = 1
        while size > 0x7F:
            head[i] = (size & 0x7F) | 0x80
            size >>= 7
            i += 1
        head[i] = size
        self.sock.write(head, i + 2)
        self.sock.write(var)
        self._send_str(self.client_id)
        if self.lw_topic:
            self._send_str(self.lw_topic)
            self._send_str(self.lw_msg)
        if self.user:
            self._send_str(self.user)
            self._send_str(self.pswd)
        resp = self.sock.read(4)
        if resp[0] != 0x20 or resp[1] != 2:
            raise MQTTException("bad CONNACK")
        if resp[3]:
            raise MQTTException(resp[3])
        return resp[2] & 1

    def disconnect(self):
        self.sock.write(b"\xe0\0")
        self.sock.close()

    def ping(self):
        self.sock.write(b"\xc0\0")

    def publish(self, topic, msg, retain=False, qos=0):
        pkt = bytearray(b"\x30\0\0\0")
        pkt[0] |= qos << 1 | retain
        size = 2 + len(topic) + len(msg) + (2 if qos else 0)
        i = 1
        while size > 0x7F:
            pkt[i] = (size & 0x7F) | 0x80
            size >>= 7
            i += 1
        pkt[i] = size
        self.sock.write(pkt, i + 1)
        self._send_str(topic)
        if qos:
            self.pid += 1
            pid = self.pid
            struct.pack_into("!H", pkt, 0, pid)
            self.sock.write(pkt, 2)
        self.sock.write(msg)
        if qos == 1:
            while True:  # one at a time: its PUBACK before anything else
                if self.wait_msg() == 0x40:
                    if self.sock.read(1) != b"\x02":
                        raise MQTTException("bad PUBACK")
                    got = self.sock.read(2)
                    if got[0] << 8 | got[1] == pid:
                        return

    def subscribe(self, topic, qos=0):
        pkt = bytearray(b"\x82\0\0\0")
        self.pid += 1
        struct.pack_into("!BH", pkt, 1, 5 + len(topic), self.pid)
        self.sock.write(pkt)
        self._send_str(topic)
        self.sock.write(qos.to_bytes(1, "little"))
        while True:
            if self.wait_msg() == 0x90:
                resp = self.sock.read(4)
                if resp[3] == 0x80:
                    raise MQTTException(resp[3])
                return

    def wait_msg(self):
        res = self.sock.read(1)
        self.sock.setblocking(True)
        if res is None:
            return None
        if res == b"":
            raise OSError(-1)
        if res == b"\xd0":  # PINGRESP
            self.sock.read(1)
            return None
        op = res[0]
        if op & 0xF0 != 0x30:
            return op
        size = self._recv_len()
        n = self.sock.read(2)
        n = n[0] << 8 | n[1]
        topic = self.sock.read(n)
        size -= n + 2
        if op & 6:
            pid = self.sock.read(2)
            pid = pid[0] << 8 | pid[1]
            size -= 2
        msg = self.sock.read(size)
        if self.cb:
            self.cb(topic, msg)
        if op & 6 == 2:
            ack = bytearray(b"\x40\x02\0\0")
            struct.pack_into("!H", ack, 2, pid)
            self.sock.write(ack)
        return op

    def check_msg(self):
        self.sock.setblocking(False)
        return self.wait_msg()
