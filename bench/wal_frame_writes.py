#!/usr/bin/env python3
"""What SQLite's way of writing WAL frames costs in system calls.

SQLite appends each WAL frame with two pwrite()s, the 24-byte frame header
and then the page (walWriteOneFrame); a group COMMIT of the write-path bench
writes ~7.5 frames per use that way. This writes a COMMIT's worth of frames
both ways, alternating, into a file next to where the bench's database
lives, and prints the median and 10th-percentile time per frame:

    python3 bench/wal_frame_writes.py [DIR] [FRAMES] [ROUNDS]

It answers whether coalescing the frames into one pwritev() (which SQLite
cannot do by itself; it would take a VFS shim) is worth building.
"""
import os
import sys
import tempfile
import time

directory = sys.argv[1] if len(sys.argv) > 1 else tempfile.gettempdir()
frames = int(sys.argv[2]) if len(sys.argv) > 2 else 200  # a group of ~25 uses
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 60
PAGE = 4096
HEADER = 24
header, page = b"h" * HEADER, b"p" * PAGE

fd, path = tempfile.mkstemp(dir=directory, prefix="wal-frames-")
try:
    def two_writes_per_frame(offset):
        for i in range(frames):
            at = offset + i * (HEADER + PAGE)
            os.pwrite(fd, header, at)
            os.pwrite(fd, page, at + HEADER)

    def one_pwritev(offset):
        buffers = [header, page] * frames  # frames ≤ 512 keeps it under IOV_MAX
        os.pwritev(fd, buffers, offset)

    times = {"two pwrite per frame": [], "one pwritev per commit": []}
    for r in range(rounds):
        offset = (r % 8) * frames * (HEADER + PAGE)
        for name, write in (("two pwrite per frame", two_writes_per_frame),
                            ("one pwritev per commit", one_pwritev)):
            started = time.perf_counter()
            write(offset)
            times[name].append(time.perf_counter() - started)
    for name, samples in times.items():
        samples.sort()
        per_frame = [s / frames * 1e6 for s in samples]
        print(f"{name}: median {per_frame[len(per_frame) // 2]:.2f} µs per frame, "
              f"p10 {per_frame[len(per_frame) // 10]:.2f} µs")
finally:
    os.close(fd)
    os.unlink(path)
