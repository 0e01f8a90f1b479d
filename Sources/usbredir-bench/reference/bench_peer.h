/* What the reference host and the load generator share: the socket side of
 * usbredirparser's read and write callbacks (non-blocking, "would block" is
 * 0 bytes, anything else ends the connection: *closed = 1), and the caps. */
#ifndef USBREDIR_BENCH_PEER_H
#define USBREDIR_BENCH_PEER_H

#include <errno.h>
#include <stdint.h>
#include <sys/socket.h>
#include <usbredirparser.h>

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

/* The caps both bench peers announce: what our Swift host announces and
 * what QEMU needs on xhci (field notes). */
static inline void set_bench_caps(uint32_t *caps)
{
    usbredirparser_caps_set_cap(caps, usb_redir_cap_connect_device_version);
    usbredirparser_caps_set_cap(caps, usb_redir_cap_filter);
    usbredirparser_caps_set_cap(caps, usb_redir_cap_device_disconnect_ack);
    usbredirparser_caps_set_cap(caps, usb_redir_cap_ep_info_max_packet_size);
    usbredirparser_caps_set_cap(caps, usb_redir_cap_64bits_ids);
    usbredirparser_caps_set_cap(caps, usb_redir_cap_32bits_bulk_length);
}

#endif
