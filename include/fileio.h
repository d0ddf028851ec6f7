/*
 * fileio.h - small file helpers shared by the modules that persist state
 * (sessions, audit log, device trust, feed cache, admin changes).
 */
#ifndef ZT_FILEIO_H
#define ZT_FILEIO_H

#include <stddef.h>

/* Write all len bytes to fd, retrying on EINTR and short writes.
 * 0, or -1 with errno set. */
int fileio_write_all(int fd, const void *buf, size_t len);

#endif
