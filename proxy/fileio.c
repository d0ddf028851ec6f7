/*
 * fileio.c - small file helpers (include/fileio.h).
 */
#include <errno.h>
#include <unistd.h>

#include "fileio.h"

int fileio_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n == -1) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}
