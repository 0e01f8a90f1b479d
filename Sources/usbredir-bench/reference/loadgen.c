/*
 * usbredir-loadgen: the load generator of `make bench`.
 *
 * A usbredir *guest* (usb-guest role) on libusbredirparser that talks raw
 * usbredir over TCP to one or more hosts serving the source-sink device
 * (our `usbredir apply` and the C reference host, usbredir-refhost.c). It
 * sends its hello, waits for device_connect, then keeps N packets in flight
 * and measures.
 *
 *   usbredir-loadgen run [--warmup S] [--seconds S] [--rounds R]
 *                        --target NAME=HOST:PORT:PID ... --case KIND,SIZE,N ...
 *       KIND: in (bulk IN 0x81), out (bulk OUT 0x02), ctl (GET_DESCRIPTOR
 *       device, SIZE ignored, 18 bytes). For each case, for each round, the
 *       targets run one after the other in the order given (A B A B ...).
 *       Every byte of bulk IN data is checked against byte i = i % 63; OUT
 *       answers must report the length sent; control answers must carry the
 *       device descriptor of 0525:a4a0.
 *       One line per run on stdout:
 *         RUN case=KIND,SIZE,N target=NAME round=K transfers=T bytes=B
 *             seconds=S p50_us=X p99_us=Y cpu_us=C sched_us=C rss_kb=R errors=E
 *       cpu_us: utime+stime of the target's PID (/proc/PID/stat) over the
 *       measured window (10 ms ticks); sched_us: the same from the threads'
 *       schedstat (ns-exact); rss_kb: its VmRSS at the end of the window.
 *       Progress goes to stderr.
 *   usbredir-loadgen hold HOST:PORT ...
 *       Connects to every host, waits for each device_connect, prints
 *       "HELD N" and keeps the connections (idle) until stdin closes or a
 *       signal ends it.
 */
#define _GNU_SOURCE
#include <dirent.h>
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
#include <time.h>
#include <unistd.h>
#include <usbredirparser.h>

#include "bench_peer.h"

#define EP_BULK_IN 0x81
#define EP_BULK_OUT 0x02
#define MAX_SIZE (4 * 1024 * 1024)
#define MAX_INFLIGHT 256
#define MAX_TARGETS 16
#define MAX_CASES 64
#define STALL_SECONDS 10.0

enum kind { K_IN, K_OUT, K_CTL };
enum phase { P_WARMUP, P_MEASURE, P_DRAIN };

struct peer {
    const char *name, *host, *port;
    int pid;
    int fd;
    int closed, connected;
    struct usbredirparser *parser;
    /* the run in progress */
    enum kind kind;
    int size, inflight, outstanding;
    enum phase phase;
    uint64_t next_id;
    double sent_at[MAX_INFLIGHT];
    uint64_t transfers, bytes, errors;
    double *lat;        /* microseconds, measured window only */
    size_t nlat, caplat;
    double last_progress;
};

static uint8_t *pattern, *out_data;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *msg)
{
    fprintf(stderr, "loadgen: %s\n", msg);
    exit(1);
}

/* utime + stime of PID in microseconds, or -1. */
static long long cpu_us(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long long ut = 0, st = 0;
    /* after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt
       majflt cmajflt utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)((ut + st) * 1000000ULL / (unsigned long long)sysconf(_SC_CLK_TCK));
}

/* On-CPU time of PID in microseconds, ns-exact: the sum of the first field
   of /proc/PID/task/TID/schedstat over its threads; -1 if unavailable.
   (utime+stime count 10 ms ticks: too coarse for a host that uses a few
   ticks per window, so this is printed beside them.) */
static long long sched_us(int pid)
{
    char path[96];
    snprintf(path, sizeof(path), "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    unsigned long long total = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/%d/task/%.20s/schedstat", pid, e->d_name);
        FILE *f = fopen(path, "r");
        unsigned long long ns = 0;
        if (f) {
            if (fscanf(f, "%llu", &ns) == 1)
                total += ns;
            fclose(f);
        }
    }
    closedir(d);
    return (long long)(total / 1000);
}

static long rss_kb(int pid)
{
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* --- parser callbacks ---------------------------------------------------- */

static void log_cb(void *priv, int level, const char *msg)
{
    struct peer *p = priv;
    if (level <= usbredirparser_error)
        fprintf(stderr, "loadgen: %s: parser: %s\n", p->name, msg);
}

static int read_cb(void *priv, uint8_t *data, int count)
{
    struct peer *p = priv;
    return socket_read(p->fd, data, count, &p->closed);
}

static int write_cb(void *priv, uint8_t *data, int count)
{
    struct peer *p = priv;
    return socket_write(p->fd, data, count, MSG_DONTWAIT, &p->closed);
}

static void on_hello(void *priv, struct usb_redir_hello_header *h) { (void)priv; (void)h; }
static void on_device_connect(void *priv, struct usb_redir_device_connect_header *h)
{
    struct peer *p = priv;
    if (h->vendor_id != 0x0525 || h->product_id != 0xa4a0)
        fprintf(stderr, "loadgen: %s: unexpected device %04x:%04x\n", p->name, h->vendor_id, h->product_id);
    p->connected = 1;
}
static void on_device_disconnect(void *priv)
{
    struct peer *p = priv;
    p->connected = 0;
    /* libusbredirparser sends the device_disconnect_ack itself */
}
static void on_interface_info(void *priv, struct usb_redir_interface_info_header *h) { (void)priv; (void)h; }
static void on_ep_info(void *priv, struct usb_redir_ep_info_header *h) { (void)priv; (void)h; }
static void on_config_status(void *priv, uint64_t id, struct usb_redir_configuration_status_header *h)
{ (void)priv; (void)id; (void)h; }
static void on_alt_status(void *priv, uint64_t id, struct usb_redir_alt_setting_status_header *h)
{ (void)priv; (void)id; (void)h; }
static void on_filter_reject(void *priv) { (void)priv; }
static void on_filter_filter(void *priv, struct usbredirfilter_rule *r, int n)
{
    (void)priv; (void)n;
    free(r);
}

static void submit(struct peer *p);

/* One answer: check it, count it when it lands in the measured window. */
static void complete(struct peer *p, uint64_t id, int ok, uint64_t nbytes)
{
    double t = now();
    p->outstanding--;
    p->last_progress = t;
    if (!ok) {
        p->errors++;
        if (p->errors <= 3)
            fprintf(stderr, "loadgen: %s: bad answer to id %llu\n", p->name, (unsigned long long)id);
    }
    if (p->phase == P_MEASURE && ok) {
        if (p->nlat == p->caplat) {
            p->caplat = p->caplat ? p->caplat * 2 : 65536;
            p->lat = realloc(p->lat, p->caplat * sizeof(double));
            if (!p->lat)
                die("out of memory");
        }
        p->lat[p->nlat++] = (t - p->sent_at[id % MAX_INFLIGHT]) * 1e6;
        p->transfers++;
        p->bytes += nbytes;
    }
    if (p->phase != P_DRAIN)
        submit(p);
}

static void on_control(void *priv, uint64_t id, struct usb_redir_control_packet_header *h,
                       uint8_t *data, int len)
{
    struct peer *p = priv;
    int ok = h->status == usb_redir_success && len == 18 && data && data[0] == 18 && data[1] == 1 &&
             data[8] == 0x25 && data[9] == 0x05 && data[10] == 0xa0 && data[11] == 0xa4;
    complete(p, id, ok, (uint64_t)len);
    if (data)
        usbredirparser_free_packet_data(p->parser, data);
}

static void on_bulk(void *priv, uint64_t id, struct usb_redir_bulk_packet_header *h,
                    uint8_t *data, int len)
{
    struct peer *p = priv;
    uint32_t length = h->length | ((uint32_t)h->length_high << 16);
    int ok;
    if (h->endpoint == EP_BULK_IN)
        ok = h->status == usb_redir_success && len == p->size && data && memcmp(data, pattern, len) == 0;
    else
        ok = h->status == usb_redir_success && length == (uint32_t)p->size;
    complete(p, id, ok, (uint64_t)p->size);
    if (data)
        usbredirparser_free_packet_data(p->parser, data);
}

static void on_interrupt(void *priv, uint64_t id, struct usb_redir_interrupt_packet_header *h,
                         uint8_t *data, int len)
{
    struct peer *p = priv;
    (void)id; (void)h; (void)len;
    if (data)
        usbredirparser_free_packet_data(p->parser, data);
}

static void submit(struct peer *p)
{
    uint64_t id = p->next_id++;
    p->sent_at[id % MAX_INFLIGHT] = now();
    p->outstanding++;
    if (p->kind == K_CTL) {
        struct usb_redir_control_packet_header h = {
            .endpoint = 0x80, .request = 6, .requesttype = 0x80,
            .value = 0x0100, .index = 0, .length = 18 };
        usbredirparser_send_control_packet(p->parser, id, &h, NULL, 0);
    } else if (p->kind == K_IN) {
        struct usb_redir_bulk_packet_header h = {
            .endpoint = EP_BULK_IN, .length = (uint16_t)(p->size & 0xffff),
            .length_high = (uint16_t)((uint32_t)p->size >> 16) };
        usbredirparser_send_bulk_packet(p->parser, id, &h, NULL, 0);
    } else {
        struct usb_redir_bulk_packet_header h = {
            .endpoint = EP_BULK_OUT, .length = (uint16_t)(p->size & 0xffff),
            .length_high = (uint16_t)((uint32_t)p->size >> 16) };
        usbredirparser_send_bulk_packet(p->parser, id, &h, out_data, p->size);
    }
}

/* --- connection ---------------------------------------------------------- */

/* One poll round: write what is queued, read what arrived (callbacks run). */
static void pump(struct peer *p, int timeout_ms)
{
    if (usbredirparser_has_data_to_write(p->parser) && usbredirparser_do_write(p->parser) != 0)
        p->closed = 1;
    struct pollfd pfd = { .fd = p->fd, .events = POLLIN };
    if (usbredirparser_has_data_to_write(p->parser))
        pfd.events |= POLLOUT;
    int r = poll(&pfd, 1, timeout_ms);
    if (r < 0 && errno != EINTR)
        die("poll");
    if (r > 0 && (pfd.revents & (POLLIN | POLLHUP | POLLERR))) {
        int rr = usbredirparser_do_read(p->parser);
        if (rr == usbredirparser_read_parse_error)
            die("parse error from host");
    }
    if (usbredirparser_has_data_to_write(p->parser) && usbredirparser_do_write(p->parser) != 0)
        p->closed = 1;
}

static void connect_peer(struct peer *p)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
    double deadline = now() + 10;
    char msg[256];
    for (;;) {
        if (getaddrinfo(p->host, p->port, &hints, &ai) != 0)
            die("getaddrinfo");
        p->fd = socket(ai->ai_family, SOCK_STREAM, 0);
        int ok = connect(p->fd, ai->ai_addr, ai->ai_addrlen) == 0;
        freeaddrinfo(ai);
        if (ok)
            break;
        close(p->fd);
        if (now() > deadline) {
            snprintf(msg, sizeof(msg), "%s: cannot connect to %s:%s", p->name, p->host, p->port);
            die(msg);
        }
        usleep(100 * 1000);
    }
    int one = 1;
    setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    struct usbredirparser *u = usbredirparser_create();
    if (!u)
        die("out of memory");
    p->parser = u;
    u->priv = p;
    u->log_func = log_cb;
    u->read_func = read_cb;
    u->write_func = write_cb;
    u->hello_func = on_hello;
    u->device_connect_func = on_device_connect;
    u->device_disconnect_func = on_device_disconnect;
    u->interface_info_func = on_interface_info;
    u->ep_info_func = on_ep_info;
    u->configuration_status_func = on_config_status;
    u->alt_setting_status_func = on_alt_status;
    u->filter_reject_func = on_filter_reject;
    u->filter_filter_func = on_filter_filter;
    u->control_packet_func = on_control;
    u->bulk_packet_func = on_bulk;
    u->interrupt_packet_func = on_interrupt;
    uint32_t caps[USB_REDIR_CAPS_SIZE] = { 0 };
    set_bench_caps(caps);
    usbredirparser_init(u, "usbredir-loadgen", caps, USB_REDIR_CAPS_SIZE, 0);

    while (!p->connected && !p->closed && now() < deadline)
        pump(p, 100);
    if (!p->connected) {
        snprintf(msg, sizeof(msg), "%s: no device_connect from %s:%s", p->name, p->host, p->port);
        die(msg);
    }
    if (!usbredirparser_peer_has_cap(u, usb_redir_cap_64bits_ids) ||
        !usbredirparser_peer_has_cap(u, usb_redir_cap_32bits_bulk_length))
        fprintf(stderr, "loadgen: %s: host lacks 64-bit ids or 32-bit bulk lengths\n", p->name);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void run_one(struct peer *p, enum kind kind, int size, int inflight,
                    double warmup, double seconds, const char *label, int round)
{
    p->kind = kind;
    p->size = size;
    p->inflight = inflight;
    p->phase = P_WARMUP;
    p->transfers = p->bytes = p->errors = 0;
    p->nlat = 0;
    double t0 = now(), tm0 = 0, tm1 = 0;
    long long c0 = 0, c1 = 0, s0 = 0, s1 = 0;
    long rss = -1;
    p->last_progress = t0;
    for (int i = 0; i < inflight; i++)
        submit(p);
    for (;;) {
        pump(p, 5);
        if (p->closed)
            die("host closed the connection");
        double t = now();
        if (p->phase == P_WARMUP && t >= t0 + warmup) {
            p->phase = P_MEASURE;
            p->transfers = p->bytes = 0;
            p->nlat = 0;
            tm0 = t;
            c0 = cpu_us(p->pid);
            s0 = sched_us(p->pid);
        } else if (p->phase == P_MEASURE && t >= tm0 + seconds) {
            c1 = cpu_us(p->pid);
            s1 = sched_us(p->pid);
            rss = rss_kb(p->pid);
            tm1 = now();
            p->phase = P_DRAIN;
        } else if (p->phase == P_DRAIN && p->outstanding == 0) {
            break;
        }
        if (t - p->last_progress > STALL_SECONDS) {
            fprintf(stderr, "loadgen: %s: no answer for %.0f s (%d outstanding)\n", p->name, STALL_SECONDS,
                    p->outstanding);
            exit(1);
        }
    }
    qsort(p->lat, p->nlat, sizeof(double), cmp_double);
    double p50 = p->nlat ? p->lat[p->nlat / 2] : 0, p99 = p->nlat ? p->lat[p->nlat * 99 / 100] : 0;
    printf("RUN case=%s target=%s round=%d transfers=%llu bytes=%llu seconds=%.6f p50_us=%.1f p99_us=%.1f "
           "cpu_us=%lld sched_us=%lld rss_kb=%ld errors=%llu\n",
           label, p->name, round, (unsigned long long)p->transfers, (unsigned long long)p->bytes, tm1 - tm0,
           p50, p99, (c0 >= 0 && c1 >= 0) ? c1 - c0 : -1, (s0 >= 0 && s1 >= 0) ? s1 - s0 : -1, rss,
           (unsigned long long)p->errors);
    fflush(stdout);
}

static void split_hostport(char *s, const char **host, const char **port)
{
    char *c = strrchr(s, ':');
    if (!c)
        die("expected HOST:PORT");
    *c = 0;
    *host = s;
    *port = c + 1;
}

static int cmd_run(int argc, char **argv)
{
    struct peer targets[MAX_TARGETS];
    int ntargets = 0, ncases = 0, rounds = 3;
    double warmup = 0.2, seconds = 1.0;
    struct { enum kind kind; int size, n; char label[64]; } cases[MAX_CASES];
    memset(targets, 0, sizeof(targets));
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            die("option needs a value");
        char *v = argv[++i];
        if (!strcmp(a, "--warmup")) warmup = atof(v);
        else if (!strcmp(a, "--seconds")) seconds = atof(v);
        else if (!strcmp(a, "--rounds")) rounds = atoi(v);
        else if (!strcmp(a, "--target")) {
            if (ntargets == MAX_TARGETS) die("too many targets");
            struct peer *p = &targets[ntargets++];
            char *eq = strchr(v, '=');
            if (!eq) die("--target NAME=HOST:PORT:PID");
            *eq = 0;
            p->name = v;
            char *pidc = strrchr(eq + 1, ':');
            if (!pidc) die("--target NAME=HOST:PORT:PID");
            *pidc = 0;
            p->pid = atoi(pidc + 1);
            split_hostport(eq + 1, &p->host, &p->port);
        } else if (!strcmp(a, "--case")) {
            if (ncases == MAX_CASES) die("too many cases");
            char kind[8];
            int size, n;
            if (sscanf(v, "%7[a-z],%d,%d", kind, &size, &n) != 3 || size < 0 || size > MAX_SIZE || n <= 0 ||
                n > MAX_INFLIGHT)
                die("--case KIND,SIZE,N");
            cases[ncases].kind = !strcmp(kind, "in") ? K_IN : !strcmp(kind, "out") ? K_OUT : K_CTL;
            if (strcmp(kind, "in") && strcmp(kind, "out") && strcmp(kind, "ctl")) die("case kind: in, out, ctl");
            if (cases[ncases].kind != K_CTL && size == 0) die("--case: SIZE must be > 0");
            cases[ncases].size = cases[ncases].kind == K_CTL ? 18 : size;
            cases[ncases].n = n;
            snprintf(cases[ncases].label, sizeof(cases[ncases].label), "%s,%d,%d", kind, cases[ncases].size, n);
            ncases++;
        } else
            die("unknown option");
    }
    if (!ntargets || !ncases)
        die("run needs --target and --case");
    for (int t = 0; t < ntargets; t++) {
        connect_peer(&targets[t]);
        fprintf(stderr, "loadgen: connected to %s (%s:%s, pid %d)\n", targets[t].name, targets[t].host,
                targets[t].port, targets[t].pid);
    }
    for (int c = 0; c < ncases; c++)
        for (int r = 1; r <= rounds; r++)
            for (int t = 0; t < ntargets; t++) {
                fprintf(stderr, "bench: engine %s round %d/%d %s\n", cases[c].label, r, rounds, targets[t].name);
                run_one(&targets[t], cases[c].kind, cases[c].size, cases[c].n, warmup, seconds, cases[c].label, r);
            }
    return 0;
}

static int cmd_hold(int argc, char **argv)
{
    struct peer *peers = calloc(argc, sizeof(struct peer));
    for (int i = 0; i < argc; i++) {
        peers[i].name = argv[i];
        char *s = strdup(argv[i]);
        split_hostport(s, &peers[i].host, &peers[i].port);
        connect_peer(&peers[i]);
    }
    printf("HELD %d\n", argc);
    fflush(stdout);
    char buf[256];
    while (read(0, buf, sizeof(buf)) > 0)
        ;
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    pattern = malloc(MAX_SIZE);
    out_data = malloc(MAX_SIZE);
    if (!pattern || !out_data)
        die("out of memory");
    for (int i = 0; i < MAX_SIZE; i++) {
        pattern[i] = (uint8_t)(i % 63);
        out_data[i] = (uint8_t)(i * 7 + 1);
    }
    if (argc >= 2 && !strcmp(argv[1], "run"))
        return cmd_run(argc - 2, argv + 2);
    if (argc >= 3 && !strcmp(argv[1], "hold"))
        return cmd_hold(argc - 2, argv + 2);
    fprintf(stderr, "usage: usbredir-loadgen run ... | hold HOST:PORT ...\n");
    return 64;
}
