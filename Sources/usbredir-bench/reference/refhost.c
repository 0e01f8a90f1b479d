/*
 * usbredir-refhost: the C reference host of `make bench`.
 *
 * A usbredir *host* (usb-host role) on libusbredirparser, listening for raw
 * usbredir over TCP, serving the same source-sink device as
 * Sources/Devices/SourceSinkDevice.swift (architecture.md, "Virtual devices"):
 * vendor 0x0525 product 0xa4a0, one vendor-specific interface, bulk IN 0x81
 * and bulk OUT 0x02 (512-byte max packet), interrupt IN 0x83 (64 bytes,
 * interval 4 at high speed), configuration value 1. It announces itself as
 * our Session does (hello with 64-bit ids, 32-bit bulk lengths and
 * ep_info max packet sizes among its caps; then interface_info, ep_info,
 * device_connect) and answers every control and bulk packet inline, in the
 * callback that parsed it: one thread, no queue, no copy beyond the one
 * usbredirparser makes when it serializes.
 *
 * One peer at a time; when it leaves, the next one that connects gets the
 * device anew (as a `listen:` endpoint of usbredir apply does).
 *
 * Not measured by the bench and kept simple: interrupt IN is answered at
 * once (not paced at 1 ms), cancel is a no-op (everything is answered
 * before the next packet is read), no bulk streams, no iso.
 *
 * Usage: usbredir-refhost [-v] HOST PORT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <usbredirparser.h>

#include "bench_peer.h"

#define VENDOR_ID 0x0525
#define PRODUCT_ID 0xa4a0
#define EP_BULK_IN 0x81
#define EP_BULK_OUT 0x02
#define EP_INT_IN 0x83
#define CONFIG_VALUE 1
/* Largest single transfer served, as SourceSinkDevice.maxTransferLength. */
#define MAX_TRANSFER (4 * 1024 * 1024)

static int verbose;
static uint8_t *pattern; /* byte i = i % 63, MAX_TRANSFER long */

struct conn {
    int fd;
    int closed;
    struct usbredirparser *parser;
    uint8_t configuration;
    uint8_t alt;
    uint8_t int_counter;
};

static void logf_(void *priv, int level, const char *msg)
{
    (void)priv;
    if (verbose || level <= usbredirparser_error)
        fprintf(stderr, "refhost: parser: %s\n", msg);
}

static int read_cb(void *priv, uint8_t *data, int count)
{
    struct conn *c = priv;
    return socket_read(c->fd, data, count, &c->closed);
}

static int write_cb(void *priv, uint8_t *data, int count)
{
    struct conn *c = priv;
    return socket_write(c->fd, data, count, 0, &c->closed);
}

/* --- descriptors (as Sources/Devices/DescriptorEncoding.swift) ---------- */

static const uint8_t device_descriptor[18] = {
    18, 1, 0x00, 0x02,          /* bLength, DEVICE, bcdUSB 2.00 */
    0, 0, 0, 64,                /* class, subclass, protocol, bMaxPacketSize0 */
    VENDOR_ID & 0xff, VENDOR_ID >> 8, PRODUCT_ID & 0xff, PRODUCT_ID >> 8,
    0x00, 0x01,                 /* bcdDevice 1.00 */
    1, 2, 3, 1                  /* iManufacturer, iProduct, iSerial, configs */
};

static const uint8_t config_descriptor[9 + 9 + 3 * 7] = {
    9, 2, sizeof(config_descriptor), 0, 1, CONFIG_VALUE, 0, 0x80, 50,
    9, 4, 0, 0, 3, 0xff, 0, 0, 0,
    7, 5, EP_BULK_IN, 2, 0x00, 0x02, 0,
    7, 5, EP_BULK_OUT, 2, 0x00, 0x02, 0,
    7, 5, EP_INT_IN, 3, 64, 0, 4,
};

/* String descriptor `index` into buf (UTF-16LE); returns its length or -1. */
static int string_descriptor(int index, uint8_t *buf)
{
    static const char *const strings[] = { NULL, "usbredir", "Source/Sink", "refhost" };
    if (index == 0) {
        buf[0] = 4; buf[1] = 3; buf[2] = 0x09; buf[3] = 0x04;
        return 4;
    }
    if (index < 1 || index > 3)
        return -1;
    int n = (int)strlen(strings[index]);
    buf[0] = (uint8_t)(2 + 2 * n);
    buf[1] = 3;
    for (int i = 0; i < n; i++) {
        buf[2 + 2 * i] = (uint8_t)strings[index][i];
        buf[3 + 2 * i] = 0;
    }
    return 2 + 2 * n;
}

/* --- announcement -------------------------------------------------------- */

static void announce(struct conn *c)
{
    struct usb_redir_interface_info_header ii;
    memset(&ii, 0, sizeof(ii));
    ii.interface_count = 1;
    ii.interface_class[0] = 0xff;
    usbredirparser_send_interface_info(c->parser, &ii);

    struct usb_redir_ep_info_header ep;
    memset(&ep, 0, sizeof(ep));
    memset(ep.type, usb_redir_type_invalid, sizeof(ep.type));
    /* Endpoint index = ((addr & 0x80) >> 3) | (addr & 0x0f). */
    ep.type[0] = ep.type[16] = usb_redir_type_control;
    ep.max_packet_size[0] = ep.max_packet_size[16] = 64;
    ep.type[17] = usb_redir_type_bulk;      ep.max_packet_size[17] = 512;  /* 0x81 */
    ep.type[2] = usb_redir_type_bulk;       ep.max_packet_size[2] = 512;   /* 0x02 */
    ep.type[19] = usb_redir_type_interrupt; ep.max_packet_size[19] = 64;   /* 0x83 */
    ep.interval[19] = 4;
    usbredirparser_send_ep_info(c->parser, &ep);

    struct usb_redir_device_connect_header dc = {
        .speed = usb_redir_speed_high,
        .device_class = 0, .device_subclass = 0, .device_protocol = 0,
        .vendor_id = VENDOR_ID, .product_id = PRODUCT_ID,
        .device_version_bcd = 0x0100,
    };
    usbredirparser_send_device_connect(c->parser, &dc);
}

static void on_hello(void *priv, struct usb_redir_hello_header *h)
{
    struct conn *c = priv;
    if (verbose)
        fprintf(stderr, "refhost: peer hello '%s'\n", h->version);
    announce(c);
}

/* --- requests ------------------------------------------------------------ */

static void on_reset(void *priv)
{
    struct conn *c = priv;
    c->configuration = CONFIG_VALUE;
    c->alt = 0;
}

static void on_set_configuration(void *priv, uint64_t id, struct usb_redir_set_configuration_header *h)
{
    struct conn *c = priv;
    struct usb_redir_configuration_status_header st = { .status = usb_redir_success };
    if (h->configuration == 0 || h->configuration == CONFIG_VALUE)
        c->configuration = h->configuration;
    else
        st.status = usb_redir_stall;
    st.configuration = c->configuration;
    usbredirparser_send_configuration_status(c->parser, id, &st);
}

static void on_get_configuration(void *priv, uint64_t id)
{
    struct conn *c = priv;
    struct usb_redir_configuration_status_header st = { .status = usb_redir_success,
                                                        .configuration = c->configuration };
    usbredirparser_send_configuration_status(c->parser, id, &st);
}

static void on_set_alt(void *priv, uint64_t id, struct usb_redir_set_alt_setting_header *h)
{
    struct conn *c = priv;
    struct usb_redir_alt_setting_status_header st = { .status = usb_redir_success,
                                                      .interface = h->interface, .alt = 0 };
    if (h->interface != 0 || h->alt != 0)
        st.status = usb_redir_stall;
    usbredirparser_send_alt_setting_status(c->parser, id, &st);
}

static void on_get_alt(void *priv, uint64_t id, struct usb_redir_get_alt_setting_header *h)
{
    struct conn *c = priv;
    struct usb_redir_alt_setting_status_header st = {
        .status = h->interface == 0 ? usb_redir_success : usb_redir_inval,
        .interface = h->interface, .alt = c->alt };
    usbredirparser_send_alt_setting_status(c->parser, id, &st);
}

static void on_cancel(void *priv, uint64_t id)
{
    (void)priv; (void)id; /* every packet was answered when it was parsed */
}

static void on_control(void *priv, uint64_t id, struct usb_redir_control_packet_header *h,
                       uint8_t *data, int data_len)
{
    struct conn *c = priv;
    struct usb_redir_control_packet_header r = *h;
    uint8_t buf[256];
    int n = -1;
    r.status = usb_redir_success;
    if ((h->requesttype & 0x60) == 0 && (h->requesttype & 0x80)) {
        switch (h->request) {
        case 6: /* GET_DESCRIPTOR */
            switch (h->value >> 8) {
            case 1: memcpy(buf, device_descriptor, sizeof(device_descriptor)); n = sizeof(device_descriptor); break;
            case 2: if ((h->value & 0xff) == 0) { memcpy(buf, config_descriptor, sizeof(config_descriptor)); n = sizeof(config_descriptor); } break;
            case 3: n = string_descriptor(h->value & 0xff, buf); break;
            }
            break;
        case 0: buf[0] = 0; buf[1] = 0; n = 2; break;         /* GET_STATUS */
        case 8: buf[0] = c->configuration; n = 1; break;      /* GET_CONFIGURATION */
        case 10: buf[0] = c->alt; n = 1; break;               /* GET_INTERFACE */
        }
    } else if ((h->requesttype & 0x60) == 0) {
        switch (h->request) {
        case 1: case 3: case 5: n = 0; break;                 /* CLEAR/SET_FEATURE, SET_ADDRESS */
        case 9: c->configuration = h->value & 0xff; n = 0; break;
        case 11: n = 0; break;
        }
    }
    if (n < 0) {
        r.status = usb_redir_stall;
        n = 0;
    }
    if (h->requesttype & 0x80) {
        if (n > h->length)
            n = h->length;
        r.length = (uint16_t)n;
        usbredirparser_send_control_packet(c->parser, id, &r, n ? buf : NULL, n);
    } else {
        r.length = (uint16_t)data_len;
        usbredirparser_send_control_packet(c->parser, id, &r, NULL, 0);
    }
    if (data)
        usbredirparser_free_packet_data(c->parser, data);
}

static void on_bulk(void *priv, uint64_t id, struct usb_redir_bulk_packet_header *h,
                    uint8_t *data, int data_len)
{
    struct conn *c = priv;
    struct usb_redir_bulk_packet_header r = *h;
    uint32_t length = h->length | ((uint32_t)h->length_high << 16);
    if (h->endpoint == EP_BULK_IN && length <= MAX_TRANSFER && c->configuration == CONFIG_VALUE) {
        r.status = usb_redir_success;
        usbredirparser_send_bulk_packet(c->parser, id, &r, pattern, (int)length);
    } else if (h->endpoint == EP_BULK_OUT && c->configuration == CONFIG_VALUE) {
        r.status = usb_redir_success;
        r.length = (uint16_t)(data_len & 0xffff);
        r.length_high = (uint16_t)((uint32_t)data_len >> 16);
        usbredirparser_send_bulk_packet(c->parser, id, &r, NULL, 0);
    } else {
        r.status = usb_redir_inval;
        r.length = 0;
        r.length_high = 0;
        usbredirparser_send_bulk_packet(c->parser, id, &r, NULL, 0);
    }
    if (data)
        usbredirparser_free_packet_data(c->parser, data);
}

static void on_interrupt(void *priv, uint64_t id, struct usb_redir_interrupt_packet_header *h,
                         uint8_t *data, int data_len)
{
    struct conn *c = priv;
    struct usb_redir_interrupt_packet_header r = *h;
    uint8_t buf[64];
    (void)data_len;
    if (h->endpoint == EP_INT_IN) {
        int n = h->length < 64 ? h->length : 64;
        c->int_counter++;
        memset(buf, c->int_counter, sizeof(buf));
        r.status = usb_redir_success;
        r.length = (uint16_t)n;
        usbredirparser_send_interrupt_packet(c->parser, id, &r, buf, n);
    } else {
        r.status = usb_redir_inval;
        r.length = 0;
        usbredirparser_send_interrupt_packet(c->parser, id, &r, NULL, 0);
    }
    if (data)
        usbredirparser_free_packet_data(c->parser, data);
}

/* --- one connection ------------------------------------------------------ */

static void serve(int fd)
{
    struct conn c = { .fd = fd, .configuration = CONFIG_VALUE };
    uint32_t caps[USB_REDIR_CAPS_SIZE] = { 0 };
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    c.parser = usbredirparser_create();
    if (!c.parser) {
        fprintf(stderr, "refhost: out of memory\n");
        exit(1);
    }
    struct usbredirparser *p = c.parser;
    p->priv = &c;
    p->log_func = logf_;
    p->read_func = read_cb;
    p->write_func = write_cb;
    p->hello_func = on_hello;
    p->reset_func = on_reset;
    p->set_configuration_func = on_set_configuration;
    p->get_configuration_func = on_get_configuration;
    p->set_alt_setting_func = on_set_alt;
    p->get_alt_setting_func = on_get_alt;
    p->cancel_data_packet_func = on_cancel;
    p->control_packet_func = on_control;
    p->bulk_packet_func = on_bulk;
    p->interrupt_packet_func = on_interrupt;

    set_bench_caps(caps);
    usbredirparser_init(p, "usbredir-refhost", caps, USB_REDIR_CAPS_SIZE, usbredirparser_fl_usb_host);

    /* Read what is there (non-blocking reads), answer inline, write it all
     * (blocking writes: the peer reads while it waits). */
    while (!c.closed) {
        if (usbredirparser_has_data_to_write(p)) {
            if (usbredirparser_do_write(p) != 0)
                break;
            continue;
        }
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        if (poll(&pfd, 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        int r = usbredirparser_do_read(p);
        if (r == usbredirparser_read_parse_error) {
            fprintf(stderr, "refhost: parse error, closing\n");
            break;
        }
        if (r != 0 && c.closed)
            break;
    }
    usbredirparser_destroy(p);
    close(fd);
    if (verbose)
        fprintf(stderr, "refhost: peer gone\n");
}

int main(int argc, char **argv)
{
    int argi = 1;
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        verbose = 1;
        argi++;
    }
    if (argc - argi != 2) {
        fprintf(stderr, "usage: usbredir-refhost [-v] HOST PORT\n");
        return 64;
    }
    signal(SIGPIPE, SIG_IGN);
    pattern = malloc(MAX_TRANSFER);
    if (!pattern)
        return 1;
    for (int i = 0; i < MAX_TRANSFER; i++)
        pattern[i] = (uint8_t)(i % 63);

    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
    struct addrinfo *ai;
    int e = getaddrinfo(argv[argi], argv[argi + 1], &hints, &ai);
    if (e) {
        fprintf(stderr, "refhost: %s: %s\n", argv[argi], gai_strerror(e));
        return 1;
    }
    int lfd = socket(ai->ai_family, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (lfd < 0 || bind(lfd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(lfd, 8) < 0) {
        perror("refhost: listen");
        return 1;
    }
    freeaddrinfo(ai);
    fprintf(stderr, "refhost: listening on %s:%s\n", argv[argi], argv[argi + 1]);
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            perror("refhost: accept");
            return 1;
        }
        serve(fd);
    }
}
