#!/usr/bin/python3
"""A FUSE file system that never answers: a process that touches it waits in
the kernel, uninterruptibly, until this daemon lets go.

    fuse_hold.py MOUNTPOINT

Mounts a FUSE file system at MOUNTPOINT (raw /dev/fuse, no libfuse: mount(2)
with "fd=N,rootmode=40000,user_id=0,group_id=0"), answers FUSE_INIT, then
reads the next request and holds it unanswered, printing "held OPCODE PID".
Once the daemon has read a request, the requesting process waits for the
answer in TASK_UNINTERRUPTIBLE, and SIGKILL does not end that wait
(fs/fuse/dev.c, request_wait_answer). When stdin reaches EOF the daemon
closes /dev/fuse, which aborts the connection: the held request fails and
the process can die. The caller unmounts (umount -l)."""

import ctypes
import os
import struct
import sys

FUSE_INIT = 26
IN_HEADER = struct.Struct("<IIQQIIIHH")  # len opcode unique nodeid uid gid pid extlen pad
OUT_HEADER = struct.Struct("<IiQ")  # len error unique


def main():
    mnt = sys.argv[1]
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    libc = ctypes.CDLL(None, use_errno=True)
    opts = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
    MS_NOSUID, MS_NODEV = 2, 4
    if libc.mount(b"fuse-hold", mnt.encode(), b"fuse", MS_NOSUID | MS_NODEV, opts) != 0:
        e = ctypes.get_errno()
        sys.exit(f"fuse_hold: mount {mnt}: {os.strerror(e)}")
    print("mounted", flush=True)
    while True:
        buf = os.read(fd, 1 << 20)
        _, opcode, unique, _, _, _, pid, _, _ = IN_HEADER.unpack_from(buf)
        if opcode == FUSE_INIT:
            # fuse_init_out as of protocol 7.22 (24 bytes): major, minor,
            # max_readahead, flags, max_background, congestion_threshold,
            # max_write. A kernel speaking a later minor accepts it.
            body = struct.pack("<IIIIHHI", 7, 22, 65536, 0, 16, 12, 65536)
            os.write(fd, OUT_HEADER.pack(OUT_HEADER.size + len(body), 0, unique) + body)
            continue
        print("held", opcode, pid, flush=True)
        break
    sys.stdin.read()
    os.close(fd)
    print("released", flush=True)


main()
