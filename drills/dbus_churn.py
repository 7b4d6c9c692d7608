"""Unit churn over D-Bus, as a node with a busy container runtime makes it: transient units started and stopped as
fast as systemd takes them, with a subscriber, so every unit costs systemd several messages (replies, JobNew,
JobRemoved, UnitNew, UnitRemoved, PropertiesChanged) and therefore several reply serials ("cookies").

    python3 dbus_churn.py SOCKET_PATH SECONDS PREFIX [POLLS]

A minimal D-Bus client on the standard library (`busctl` would cost one process per call): SASL EXTERNAL, Hello,
Manager.Subscribe, then StartTransientUnit/StopUnit of PREFIX_<n>.slice (a new name each time: a stopped transient
unit is still loaded for a moment) pipelined, at most 16 calls in flight; runs SECONDS or until SIGTERM. With POLLS, each unit is also followed by POLLS reads of a Manager property, as the
node's monitoring agents poll systemd (each answer costs a cookie too). Prints `DONE calls=<n> errors=<n>` at the end. The wire format follows the D-Bus specification
(https://dbus.freedesktop.org/doc/dbus-specification.html, "Message Protocol").
"""
import os
import signal
import socket
import struct
import sys
import time


class Writer:
    """Little-endian D-Bus marshalling of the few types used here; offsets count from the message start."""

    def __init__(self, start=0):
        self.buf = bytearray()
        self.start = start

    def align(self, n):
        while (self.start + len(self.buf)) % n:
            self.buf.append(0)

    def byte(self, v):
        self.buf.append(v)

    def u32(self, v):
        self.align(4)
        self.buf += struct.pack("<I", v)

    def string(self, s):  # also object paths
        b = s.encode()
        self.u32(len(b))
        self.buf += b + b"\0"

    def signature(self, s):
        b = s.encode()
        self.byte(len(b))
        self.buf += b + b"\0"

    def array(self, elem_align, fill):
        """An array: its length, padding to the element alignment (also when empty), the elements."""
        self.u32(0)
        at = len(self.buf) - 4
        self.align(elem_align)
        begin = len(self.buf)
        fill(self)
        struct.pack_into("<I", self.buf, at, len(self.buf) - begin)


def message(serial, dest, path, iface, member, sig="", body=b""):
    fields = [(1, "o", path), (2, "s", iface), (3, "s", member), (6, "s", dest)] + ([(8, "g", sig)] if sig else [])
    w = Writer()
    w.buf += b"l" + bytes([1, 0, 1]) + struct.pack("<II", len(body), serial)

    def put_fields(w):
        for code, t, v in fields:
            w.align(8)
            w.byte(code)
            w.signature(t)
            (w.signature if t == "g" else w.string)(v)

    w.array(8, put_fields)
    w.align(8)
    return bytes(w.buf) + body


def start_transient_body(name):
    w = Writer()
    w.string(name)
    w.string("replace")

    def props(w):
        w.align(8)
        w.string("Description")
        w.signature("s")
        w.string("unit churn")

    w.array(8, props)
    w.array(8, lambda w: None)  # no auxiliary units
    return bytes(w.buf)


def get_body(iface, prop):
    w = Writer()
    w.string(iface)
    w.string(prop)
    return bytes(w.buf)


def stop_body(name):
    w = Writer()
    w.string(name)
    w.string("replace")
    return bytes(w.buf)


class Conn:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(10)
        self.s.connect(path)
        self.s.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
        line = self.readline()
        if not line.startswith(b"OK"):
            raise SystemExit(f"auth refused: {line!r}")
        self.s.sendall(b"BEGIN\r\n")
        self.serial = 0
        self.replies = 0
        self.errors = 0
        self.buf = b""

    def readline(self):
        out = b""
        while not out.endswith(b"\r\n"):
            c = self.s.recv(1)
            if not c:
                raise SystemExit("bus closed during auth")
            out += c
        return out

    def call(self, *args, **kw):
        self.serial += 1
        self.s.sendall(message(self.serial, *args, **kw))

    def send_template(self, template, n):
        """Sends `n` copies of a prepared message, each with its own serial, in one write."""
        out = bytearray()
        for _ in range(n):
            self.serial += 1
            m = bytearray(template)
            struct.pack_into("<I", m, 8, self.serial)
            out += m
        self.s.sendall(out)

    def read_replies(self):
        """Reads what has arrived (blocking for the first bytes); counts method returns and errors, drops signals."""
        chunk = self.s.recv(262144)
        if not chunk:
            raise SystemExit("bus closed")
        self.buf += chunk
        buf, at = self.buf, 0
        while len(buf) - at >= 16:
            body_len, = struct.unpack_from("<I", buf, at + 4)
            fields_len, = struct.unpack_from("<I", buf, at + 12)
            total = 16 + ((fields_len + 7) & ~7) + body_len
            if len(buf) - at < total:
                break
            if buf[at + 1] in (2, 3):
                self.replies += 1
                self.errors += buf[at + 1] == 3
            at += total
        self.buf = buf[at:]


WINDOW = 16  # calls in flight: enough to keep systemd busy, few enough that other clients wait little
SD = ("org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager")


def main():
    path, seconds, prefix = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    polls = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    get = get_body(SD[2], "NJobs")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    c = Conn(path)
    c.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello")
    c.call(*SD, "Subscribe")
    print("STARTED", flush=True)
    poll = message(0, SD[0], SD[1], "org.freedesktop.DBus.Properties", "Get", "ss", get)
    end = time.monotonic() + seconds
    i = 0
    c.s.settimeout(10)
    while time.monotonic() < end and not stop:
        while c.serial - c.replies > WINDOW - 2 - polls:
            c.read_replies()
        name = f"{prefix}_{i}.slice"  # "-" would nest slices
        c.call(*SD, "StartTransientUnit", "ssa(sv)a(sa(sv))", start_transient_body(name))
        c.call(*SD, "StopUnit", "ss", stop_body(name))
        if polls:
            c.send_template(poll, polls)
        i += 1
    while c.replies < c.serial and time.monotonic() < end + 10:
        c.read_replies()
    print(f"DONE calls={c.serial} errors={c.errors}", flush=True)


if __name__ == "__main__":
    main()
