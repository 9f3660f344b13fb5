"""A FUSE file system whose getattr stalls on demand, for ringxfer's tests.

It holds one read-only file, /data, of $SLOWFS_SIZE bytes (byte i is
(7 * i + 3) % 251). While the file named by $SLOWFS_ARM exists, the next
getattr of /data removes it and sleeps $SLOWFS_STALL seconds before it
answers: a server that stalls the way a slow network file system does.

Mount with attr_timeout=0 so every stat reaches getattr:
    python3 slowfs.py MOUNTPOINT -f -o attr_timeout=0,entry_timeout=0
Needs python3-fuse (Debian) and fusermount3 (fuse3).
"""

import errno
import os
import stat
import time

import fuse

fuse.fuse_python_api = (0, 2)

SIZE = int(os.environ.get("SLOWFS_SIZE", "1048576"))
ARM = os.environ["SLOWFS_ARM"]
STALL = float(os.environ.get("SLOWFS_STALL", "5"))


def content(offset, length):
    return bytes((7 * i + 3) % 251 for i in range(offset, offset + length))


class SlowFS(fuse.Fuse):
    def getattr(self, path):
        st = fuse.Stat()
        if path == "/":
            st.st_mode = stat.S_IFDIR | 0o755
            st.st_nlink = 2
            return st
        if path != "/data":
            return -errno.ENOENT
        try:
            os.unlink(ARM)
            time.sleep(STALL)
        except FileNotFoundError:
            pass
        st.st_mode = stat.S_IFREG | 0o444
        st.st_nlink = 1
        st.st_size = SIZE
        return st

    def readdir(self, path, offset):
        for name in (".", "..", "data"):
            yield fuse.Direntry(name)

    def open(self, path, flags):
        return 0 if path == "/data" else -errno.ENOENT

    def read(self, path, size, offset):
        if offset >= SIZE:
            return b""
        return content(offset, min(size, SIZE - offset))


def main():
    fs = SlowFS()
    fs.parse(errex=1)
    # Other requests are answered while one getattr sleeps.
    fs.multithreaded = True
    fs.main()


if __name__ == "__main__":
    main()
