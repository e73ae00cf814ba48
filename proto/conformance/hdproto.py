"""Independent hotdesk terminal protocol v1 client (written from proto/PROTOCOL.md only).

Standard library only: own CBOR (RFC 8949) encoder/decoder, Ed25519 in ed25519.py,
TLS 1.3 + ALPN hotdesk/1 with certificate pinning (SHA-256 of the leaf DER).
"""
import base64
import hashlib
import hmac
import queue
import socket
import ssl
import struct
import threading
import time

import ed25519

# ---------------------------------------------------------------- CBOR


class Raw(bytes):
    """Pre-encoded CBOR bytes, inserted verbatim by the encoder."""


class Simple:
    def __init__(self, v):
        self.v = v

    def __repr__(self):
        return "simple(%d)" % self.v

    def __eq__(self, o):
        return isinstance(o, Simple) and o.v == self.v

    def __hash__(self):
        return hash(("simple", self.v))


class Tag:
    def __init__(self, tag, value):
        self.tag, self.value = tag, value

    def __repr__(self):
        return "tag(%d, %r)" % (self.tag, self.value)


UNDEFINED = Simple(23)


def _head(major, n):
    if n < 24:
        return bytes([(major << 5) | n])
    if n < 0x100:
        return bytes([(major << 5) | 24, n])
    if n < 0x10000:
        return bytes([(major << 5) | 25]) + struct.pack(">H", n)
    if n < 0x100000000:
        return bytes([(major << 5) | 26]) + struct.pack(">I", n)
    return bytes([(major << 5) | 27]) + struct.pack(">Q", n)


def enc(v):
    """Core deterministic encoding (RFC 8949 4.2.1)."""
    if isinstance(v, Raw):
        return bytes(v)
    if v is None:
        return b"\xf6"
    if v is True:
        return b"\xf5"
    if v is False:
        return b"\xf4"
    if isinstance(v, Simple):
        return _head(7, v.v) if v.v < 24 else bytes([0xF8, v.v])
    if isinstance(v, Tag):
        return _head(6, v.tag) + enc(v.value)
    if isinstance(v, int):
        return _head(0, v) if v >= 0 else _head(1, -1 - v)
    if isinstance(v, float):
        return b"\xfb" + struct.pack(">d", v)
    if isinstance(v, (bytes, bytearray)):
        return _head(2, len(v)) + bytes(v)
    if isinstance(v, str):
        b = v.encode("utf-8", "surrogatepass")
        return _head(3, len(b)) + b
    if isinstance(v, (list, tuple)):
        return _head(4, len(v)) + b"".join(enc(x) for x in v)
    if isinstance(v, dict):
        items = sorted((enc(k), enc(x)) for k, x in v.items())
        return _head(5, len(items)) + b"".join(k + x for k, x in items)
    raise TypeError(type(v))


class CBORError(Exception):
    pass


def dec(data):
    """Strict decoder for frames from the broker: one item, nothing after it."""
    v, i = _dec(data, 0, 0)
    if i != len(data):
        raise CBORError("trailing data")
    return v


def _dec(b, i, depth):
    if i >= len(b):
        raise CBORError("truncated")
    ib = b[i]
    major, ai = ib >> 5, ib & 31
    i += 1
    if ai < 24:
        n = ai
    elif ai in (24, 25, 26, 27):
        ln = 1 << (ai - 24)
        if i + ln > len(b):
            raise CBORError("truncated")
        n = int.from_bytes(b[i:i + ln], "big")
        i += ln
    elif ai == 31:
        raise CBORError("indefinite length")
    else:
        raise CBORError("reserved additional info")
    if major == 0:
        return n, i
    if major == 1:
        return -1 - n, i
    if major in (2, 3):
        if i + n > len(b):
            raise CBORError("truncated")
        s = bytes(b[i:i + n])
        i += n
        if major == 3:
            s = s.decode("utf-8")
        return s, i
    if major == 4:
        if depth >= 8:
            raise CBORError("nesting")
        out = []
        for _ in range(n):
            v, i = _dec(b, i, depth + 1)
            out.append(v)
        return out, i
    if major == 5:
        if depth >= 8:
            raise CBORError("nesting")
        out = {}
        for _ in range(n):
            k, i = _dec(b, i, depth + 1)
            v, i = _dec(b, i, depth + 1)
            if isinstance(k, list):
                k = tuple(k)
            if k in out:
                raise CBORError("duplicate key")
            out[k] = v
        return out, i
    if major == 6:
        v, i = _dec(b, i, depth)
        return Tag(n, v), i
    # major 7
    if ai == 20:
        return False, i
    if ai == 21:
        return True, i
    if ai == 22:
        return None, i
    if ai == 25:
        return struct.unpack(">e", n.to_bytes(2, "big"))[0], i
    if ai == 26:
        return struct.unpack(">f", n.to_bytes(4, "big"))[0], i
    if ai == 27:
        return struct.unpack(">d", n.to_bytes(8, "big"))[0], i
    return Simple(n), i


# ---------------------------------------------------------------- protocol constants

T = dict(Hello=1, Welcome=2, TokenInserted=3, TokenRemoved=4, Challenge=5, Proof=6,
         AuthPrompt=7, AuthAnswer=8, Attached=9, Detached=10, Redirect=11, Error=12,
         Ping=13, Pong=14, Pair=15, Paired=16, CardError=17, Cancel=18, Attach=19, AttachOK=20)
TNAME = {v: k for k, v in T.items()}
FIELDS = {
    1: ["Versions", "TerminalID", "Name", "Hops", "Fence", "Token"],
    2: ["Version", "ServerID", "Nonce", "PingInterval", "Members"],
    3: ["Token", "Reader", "Resume"], 4: ["Token", "Reader"],
    5: ["ID", "Token", "Nonce", "ServerID"], 6: ["ID", "Token", "Signature"],
    7: ["ID", "Style", "Text", "Token"], 8: ["ID", "Text"],
    9: ["SessionID", "Token", "User", "Endpoint", "Ticket", "Resumed", "ServerID", "ResumeKey"],
    10: ["SessionID", "Reason", "Message", "Terminal"],
    11: ["Token", "ServerID", "Addr", "Fingerprint", "Fence"],
    12: ["Code", "Message", "Token", "Detail", "RetryAfterMs"],
    13: ["Seq"], 14: ["Seq"],
    15: ["Code", "Kind", "PublicKey", "Label", "Signature"], 16: ["Token", "User"],
    17: ["Reader", "Message"], 18: ["ID"], 19: ["Ticket", "TerminalID"], 20: ["SessionID"],
}
ERR = {1: "bad_frame", 2: "bad_version", 3: "protocol_error", 4: "unknown_token", 5: "auth_failed",
       6: "rate_limited", 7: "unavailable", 8: "internal", 9: "pairing", 10: "too_many_hops",
       11: "stale_fence", 12: "token_disabled", 13: "compositor", 14: "card_error",
       15: "session_limited", 16: "cancelled"}
ERRC = {v: k for k, v in ERR.items()}
REASON = {1: "token_removed", 2: "takeover", 3: "destroyed", 4: "shutdown", 5: "admin", 6: "locked"}
MAXFRAME = 65536


def body(mtype, **kw):
    names = FIELDS[mtype]
    out = {}
    for k, v in kw.items():
        if isinstance(k, str) and k in names:
            out[names.index(k) + 1] = v
        else:
            raise KeyError(k)
    return out


def envelope(mtype, b):
    return enc({1: mtype, 2: b})


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


class Msg:
    def __init__(self, mtype, b, raw, t):
        self.type, self.body, self.raw, self.t = mtype, b, raw, t

    def __getitem__(self, name):
        names = FIELDS.get(self.type, [])
        if name in names:
            return self.body.get(names.index(name) + 1)
        raise KeyError(name)

    def get(self, name, default=None):
        v = self[name]
        return default if v is None else v

    @property
    def name(self):
        return TNAME.get(self.type, "type%d" % self.type)

    def __repr__(self):
        names = FIELDS.get(self.type, [])
        parts = []
        for k in sorted(self.body, key=lambda k: (str(type(k)), k)):
            v = self.body[k]
            n = names[k - 1] if isinstance(k, int) and 1 <= k <= len(names) else "?%r" % (k,)
            if self.type == 12 and k == 1:
                v = "%d(%s)" % (v, ERR.get(v, "?"))
            if self.type == 10 and k == 2:
                v = "%d(%s)" % (v, REASON.get(v, "?"))
            if isinstance(v, bytes):
                v = "h'%s'" % (v.hex() if len(v) <= 40 else v[:16].hex() + "..(%d)" % len(v))
            parts.append("%s=%s" % (n, v if not isinstance(v, str) else repr(v)))
        return "%s{%s}" % (self.name, ", ".join(parts))


# ---------------------------------------------------------------- crypto helpers

def fingerprint(der):
    return hashlib.sha256(der).digest()


def parse_fp(s):
    s = s.strip().lower()
    if s.startswith("sha256:"):
        s = s[7:]
    s = s.replace(":", "")
    b = bytes.fromhex(s)
    if len(b) != 32:
        raise ValueError("fingerprint must be 32 bytes")
    return b


def token_id(pub):
    return "soft." + base64.b32encode(hashlib.sha256(pub).digest()[:20]).decode().rstrip("=").lower()


def lp(x):
    if isinstance(x, str):
        x = x.encode()
    return struct.pack(">H", len(x)) + x


def challenge_message(terminal_id, server_id, welcome_nonce, challenge_nonce, token):
    return (b"hotdesk-soft-token-v1\x00" + lp(terminal_id) + lp(server_id) + lp(welcome_nonce)
            + lp(challenge_nonce) + lp(token))


def pair_message(terminal_id, server_id, welcome_nonce, code, kind, pub):
    return (b"hotdesk-pair-v1\x00" + lp(terminal_id) + lp(server_id) + lp(welcome_nonce)
            + lp(code) + lp(kind) + lp(pub))


class SoftKey:
    def __init__(self, seed):
        self.seed = seed
        self.pub = ed25519.public_key(seed)
        self.token = token_id(self.pub)

    def sign(self, m):
        return ed25519.sign(self.seed, m)


# ---------------------------------------------------------------- connection


class Closed(Exception):
    pass


def tls_context(alpn=("hotdesk/1",), min_version=ssl.TLSVersion.TLSv1_3,
                max_version=ssl.TLSVersion.TLSv1_3):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # pinning is checked by hand (PROTOCOL.md 1.1)
    ctx.minimum_version = min_version
    ctx.maximum_version = max_version
    if alpn is not None:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def dial(addr, pin=None, ctx=None, source=None, timeout=5.0, require_alpn=True, session=None):
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout,
                                    source_address=(source, 0) if source else None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ctx = ctx or tls_context()
    ss = ctx.wrap_socket(sock, server_hostname=host if not host[0].isdigit() else None,
                         session=session)
    der = ss.getpeercert(binary_form=True)
    if pin is not None and not hmac.compare_digest(fingerprint(der), pin):
        ss.close()
        raise ssl.SSLError("certificate does not match the pin")
    if require_alpn and ss.selected_alpn_protocol() != "hotdesk/1":
        ss.close()
        raise ssl.SSLError("broker selected ALPN %r" % ss.selected_alpn_protocol())
    return ss


ALL_SEEN = []  # every broker frame received by any connection: (label, Msg)


class Conn:
    """A framed connection. One I/O thread owns the TLS socket (OpenSSL objects must not be
    read and written from two threads at once): it reads frames and writes what send() queues.
    Broker Pings are answered automatically."""

    def __init__(self, ss, auto_pong=True, log=None, label="c"):
        self.ss = ss
        self.q = queue.Queue()
        self.outq = queue.Queue()
        self.all = []
        self.closed = None  # reason string once the stream ended
        self.closed_at = None
        self.auto_pong = auto_pong
        self.log = log
        self.label = label
        self.keepalive_stop = None
        self.t0 = time.monotonic()
        self.raw_mode = False  # after AttachOK: bytes go to self.rawbuf
        self.rawbuf = b""
        self.wake_r, self.wake_w = socket.socketpair()
        self.th = threading.Thread(target=self._io, daemon=True)
        self.th.start()

    def _flush(self):
        while True:
            try:
                data, ev = self.outq.get_nowait()
            except queue.Empty:
                return
            try:
                self.ss.settimeout(10)
                self.ss.sendall(data)
                ev.err = None
            except Exception as e:  # noqa
                ev.err = e
            ev.set()

    def _parse(self, buf):
        while True:
            if self.raw_mode:
                self.rawbuf += buf
                return b""
            if len(buf) < 4:
                return buf
            n = struct.unpack(">I", buf[:4])[0]
            if n == 0 or n > MAXFRAME:
                raise Closed("broker sent bad frame length %d" % n)
            if len(buf) < 4 + n:
                return buf
            p, buf = buf[4:4 + n], buf[4 + n:]
            t = time.monotonic()
            try:
                env = dec(p)
                if not (isinstance(env, dict) and set(env) == {1, 2} and isinstance(env[1], int)
                        and isinstance(env[2], dict)):
                    raise CBORError("bad envelope %r" % (env,))
                m = Msg(env[1], env[2], p, t)
            except Exception as e:  # noqa
                m = Msg(-1, {"error": str(e)}, p, t)
            self.all.append(m)
            ALL_SEEN.append((self.label, m))
            if self.log:
                self.log("%s <- %r" % (self.label, m))
            if m.type == 13 and self.auto_pong:
                seq = m.body.get(1)
                self.outq.put((frame(envelope(14, {1: seq} if seq else {})), threading.Event()))
            if m.type == 20:
                self.raw_mode = True
            self.q.put(m)

    def _io(self):
        import select
        buf = b""
        try:
            while True:
                self._flush()
                if self.ss.pending() == 0:
                    r, _, _ = select.select([self.ss, self.wake_r], [], [], 0.5)
                    if self.wake_r in r:
                        self.wake_r.recv(4096)
                    if self.ss not in r:
                        continue
                self.ss.setblocking(False)
                try:
                    c = self.ss.recv(65536)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    continue
                except (ssl.SSLError, OSError) as e:
                    raise Closed("%s: %s" % (type(e).__name__, e)) from None
                if not c:
                    raise Closed("eof-inside-frame" if buf else "eof")
                buf = self._parse(buf + c)
        except (ValueError, OSError) as e:
            e = Closed("closed locally (%s)" % type(e).__name__)
            self.closed = str(e)
            self.closed_at = time.monotonic()
            self._flush_fail()
            self.q.put(None)
        except Closed as e:
            self.closed = str(e)
            self.closed_at = time.monotonic()
            self._flush_fail()
            self.q.put(None)

    def _flush_fail(self):
        while True:
            try:
                data, ev = self.outq.get_nowait()
            except queue.Empty:
                return
            ev.err = Closed(self.closed)
            ev.set()

    def send_bytes(self, b, wait=True):
        if self.closed is not None:
            raise Closed(self.closed)
        ev = threading.Event()
        self.outq.put((bytes(b), ev))
        try:
            self.wake_w.send(b"x")
        except OSError:
            pass
        if wait:
            if not ev.wait(12):
                raise Closed("write timed out")
            if ev.err:
                raise ev.err

    def send(self, mtype, b):
        self.send_bytes(frame(envelope(mtype, b)))

    def sendm(self, name, **kw):
        mt = T[name]
        self.send(mt, body(mt, **kw))

    def recv(self, timeout=5.0, skip_pings=True):
        """Next message (Pings/Pongs skipped), None when the stream ended, "timeout"."""
        end = time.monotonic() + timeout
        while True:
            rem = end - time.monotonic()
            if rem <= 0:
                return "timeout"
            try:
                m = self.q.get(timeout=rem)
            except queue.Empty:
                return "timeout"
            if m is None:
                self.q.put(None)
                return None
            if skip_pings and m.type in (13, 14):
                continue
            return m

    def wait_closed(self, timeout=5.0):
        self.th.join(timeout)
        return self.closed

    def keepalive(self, interval):
        stop = threading.Event()
        self.keepalive_stop = stop

        def run():
            seq = 1
            while not stop.wait(interval):
                try:
                    self.send(13, {1: seq})
                except Exception:
                    return
                seq += 1
        threading.Thread(target=run, daemon=True).start()

    def close(self):
        if self.keepalive_stop:
            self.keepalive_stop.set()
        try:
            self.ss.close()
        except Exception:
            pass
        try:
            self.wake_w.send(b"x")
        except OSError:
            pass


class Terminal:
    """A terminal session on one broker connection: Hello/Welcome, token proofs, prompts."""

    def __init__(self, addr, pin, tid, name=None, log=None, source=None, keepalive=True,
                 hello_extra=None):
        self.addr, self.pin, self.tid = addr, pin, tid
        ss = dial(addr, pin, source=source)
        self.c = Conn(ss, log=log, label=tid)
        b = {1: [1], 2: tid}
        if name:
            b[3] = name
        if hello_extra:
            b.update(hello_extra)
        self.c.send(1, b)
        w = self.c.recv(5)
        if not isinstance(w, Msg) or w.type != 2:
            raise RuntimeError("no Welcome: %r (closed: %s)" % (w, self.c.closed))
        self.welcome = w
        if w["Version"] != 1 or len(w["Nonce"] or b"") != 32 or not w["ServerID"]:
            raise RuntimeError("bad Welcome %r" % w)
        self.server_id = w["ServerID"]
        self.nonce = w["Nonce"]
        self.ping_ms = w.get("PingInterval", 15000)
        if keepalive:
            self.c.keepalive(self.ping_ms / 1000.0 * 0.8)

    def proof(self, chal, key):
        m = challenge_message(self.tid, chal["ServerID"], self.nonce, chal["Nonce"], chal["Token"])
        return key.sign(m)

    def close(self):
        self.c.close()
