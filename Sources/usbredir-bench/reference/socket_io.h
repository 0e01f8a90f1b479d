/* The socket side of usbredirparser's read and write callbacks, shared by
 * the reference host and the load generator: non-blocking, "would block"
 * is 0 bytes, anything else ends the connection (*closed = 1). */
#ifndef USBREDIR_BENCH_SOCKET_IO_H
#define USBREDIR_BENCH_SOCKET_IO_H

#include <errno.h>
#include <stdint.h>
#include <sys/socket.h>

static inline int would_block(void)
{
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

static inline int socket_read(int fd, uint8_t *data, int count, int *closed)
{
    ssize_t r = recv(fd, data, count, MSG_DONTWAIT);
    if (r > 0)
        return (int)r;
    if (r < 0 && would_block())
        return 0;
    *closed = 1; /* EOF or error */
    return -1;
}

static inline int socket_write(int fd, uint8_t *data, int count, int flags, int *closed)
{
    ssize_t r = send(fd, data, count, MSG_NOSIGNAL | flags);
    if (r >= 0)
        return (int)r;
    if (would_block())
        return 0;
    *closed = 1;
    return -1;
}

#endif
