/*
 * pcm-play: plays a known 16-bit stereo pattern on an ALSA card through the
 * kernel's raw PCM ioctls (busybox has no player; the initramfs has no libc,
 * so this is built static). For the lab host's audio case (docs/labhost.md):
 * what it plays must come out of QEMU's usb-audio bit for bit, so first
 * every playback volume control of the card is set to its maximum and every
 * playback switch on (QEMU's usb-audio starts at 240 of 255, which scales
 * the samples), then the pattern is written, then silence, then DRAIN.
 *
 *   pcm-play [-c CARD] [-s SEED] [-n FRAMES] [-z PAD_FRAMES] [-r RATE]
 *
 * The pattern: FRAMES frames (default 144000, 3 s at 48 kHz) of S16_LE
 * stereo, each sample the top 16 bits of the next xorshift32 state starting
 * from SEED (default 1); the test (LabHostTests) computes the same. Then
 * PAD_FRAMES (default 48000) frames of zeros, so QEMU's wav backend has
 * written the pattern out of its stdio buffer by the time playback ends.
 * CARD: the first card with a playback PCM device 0 when not given.
 *
 * Prints "PCMPLAY ..." lines; exit status 0 only when every frame was
 * written without an xrun and DRAIN returned.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <sound/asound.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct snd_mask *mask(struct snd_pcm_hw_params *p, int n)
{
    return &p->masks[n - SNDRV_PCM_HW_PARAM_FIRST_MASK];
}

static struct snd_interval *interval(struct snd_pcm_hw_params *p, int n)
{
    return &p->intervals[n - SNDRV_PCM_HW_PARAM_FIRST_INTERVAL];
}

static void set_mask(struct snd_pcm_hw_params *p, int n, unsigned bit)
{
    struct snd_mask *m = mask(p, n);
    memset(m, 0, sizeof *m);
    m->bits[bit >> 5] |= 1u << (bit & 31);
}

static void set_int(struct snd_pcm_hw_params *p, int n, unsigned v)
{
    struct snd_interval *i = interval(p, n);
    memset(i, 0, sizeof *i);
    i->min = i->max = v;
    i->integer = 1;
}

static void hw_any(struct snd_pcm_hw_params *p)
{
    memset(p, 0, sizeof *p);
    for (int n = SNDRV_PCM_HW_PARAM_FIRST_MASK; n <= SNDRV_PCM_HW_PARAM_LAST_MASK; n++)
        memset(mask(p, n), 0xff, sizeof(struct snd_mask));
    for (int n = SNDRV_PCM_HW_PARAM_FIRST_INTERVAL; n <= SNDRV_PCM_HW_PARAM_LAST_INTERVAL; n++) {
        interval(p, n)->min = 0;
        interval(p, n)->max = ~0u;
    }
    p->rmask = ~0u;
    p->info = ~0u;
}

/* Every "... Playback Volume" to its maximum, every "... Playback Switch" on. */
static int mixer_max(int card)
{
    char path[64];
    snprintf(path, sizeof path, "/dev/snd/controlC%d", card);
    int fd = open(path, O_RDWR);
    if (fd < 0) {
        printf("PCMPLAY error open %s errno=%d\n", path, errno);
        return -1;
    }
    struct snd_ctl_elem_list list;
    memset(&list, 0, sizeof list);
    if (ioctl(fd, SNDRV_CTL_IOCTL_ELEM_LIST, &list) < 0) {
        printf("PCMPLAY error ELEM_LIST errno=%d\n", errno);
        close(fd);
        return -1;
    }
    unsigned count = list.count;
    struct snd_ctl_elem_id *ids = calloc(count ? count : 1, sizeof *ids);
    list.space = count;
    list.pids = ids;
    if (ioctl(fd, SNDRV_CTL_IOCTL_ELEM_LIST, &list) < 0) {
        printf("PCMPLAY error ELEM_LIST errno=%d\n", errno);
        close(fd);
        return -1;
    }
    int set = 0, failed = 0;
    for (unsigned k = 0; k < list.used; k++) {
        const char *name = (const char *)ids[k].name;
        int volume = strstr(name, "Playback Volume") != NULL;
        int sw = strstr(name, "Playback Switch") != NULL;
        if (!volume && !sw)
            continue;
        struct snd_ctl_elem_info info;
        memset(&info, 0, sizeof info);
        info.id = ids[k];
        if (ioctl(fd, SNDRV_CTL_IOCTL_ELEM_INFO, &info) < 0) {
            printf("PCMPLAY error ELEM_INFO '%s' errno=%d\n", name, errno);
            failed++;
            continue;
        }
        struct snd_ctl_elem_value v;
        memset(&v, 0, sizeof v);
        v.id = info.id;
        long value;
        if (volume && info.type == SNDRV_CTL_ELEM_TYPE_INTEGER)
            value = info.value.integer.max;
        else if (sw && info.type == SNDRV_CTL_ELEM_TYPE_BOOLEAN)
            value = 1;
        else
            continue;
        for (unsigned c = 0; c < info.count && c < 128; c++)
            v.value.integer.value[c] = value;
        if (ioctl(fd, SNDRV_CTL_IOCTL_ELEM_WRITE, &v) < 0) {
            printf("PCMPLAY error ELEM_WRITE '%s' errno=%d\n", name, errno);
            failed++;
            continue;
        }
        /* Read back what the driver holds now. */
        memset(&v.value, 0, sizeof v.value);
        ioctl(fd, SNDRV_CTL_IOCTL_ELEM_READ, &v);
        printf("PCMPLAY mixer '%s' set=%ld read=%ld (min %ld max %ld, %u channels)\n", name, value,
               v.value.integer.value[0], volume ? info.value.integer.min : 0L,
               volume ? info.value.integer.max : 1L, info.count);
        set++;
    }
    free(ids);
    close(fd);
    return failed ? -1 : set;
}

static int first_card(void)
{
    for (int c = 0; c < 32; c++) {
        char path[64];
        snprintf(path, sizeof path, "/dev/snd/pcmC%dD0p", c);
        if (access(path, F_OK) == 0)
            return c;
    }
    return -1;
}

int main(int argc, char **argv)
{
    int card = -1, opt;
    unsigned rate = 48000;
    uint32_t seed = 1;
    long frames = 144000, pad = 48000;
    while ((opt = getopt(argc, argv, "c:s:n:z:r:")) != -1) {
        switch (opt) {
        case 'c': card = atoi(optarg); break;
        case 's': seed = (uint32_t)strtoul(optarg, NULL, 0); break;
        case 'n': frames = atol(optarg); break;
        case 'z': pad = atol(optarg); break;
        case 'r': rate = (unsigned)atoi(optarg); break;
        default:
            fprintf(stderr, "usage: pcm-play [-c CARD] [-s SEED] [-n FRAMES] [-z PAD_FRAMES] [-r RATE]\n");
            return 2;
        }
    }
    if (seed == 0) {
        fprintf(stderr, "pcm-play: seed 0 is xorshift32's fixed point\n");
        return 2;
    }
    if (card < 0 && (card = first_card()) < 0) {
        printf("PCMPLAY error no card with a playback PCM device 0\n");
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    int controls = mixer_max(card);
    if (controls < 0)
        return 1;
    printf("PCMPLAY card=%d controls-set=%d\n", card, controls);

    char path[64];
    snprintf(path, sizeof path, "/dev/snd/pcmC%dD0p", card);
    int fd = open(path, O_WRONLY);
    if (fd < 0) {
        printf("PCMPLAY error open %s errno=%d\n", path, errno);
        return 1;
    }
    /* S16_LE, 2 channels, RATE, interleaved; periods of 2400 frames
     * (50 ms), 8 of them: 400 ms of slack for a slow TCG guest. */
    struct snd_pcm_hw_params hw;
    hw_any(&hw);
    set_mask(&hw, SNDRV_PCM_HW_PARAM_ACCESS, SNDRV_PCM_ACCESS_RW_INTERLEAVED);
    set_mask(&hw, SNDRV_PCM_HW_PARAM_FORMAT, SNDRV_PCM_FORMAT_S16_LE);
    set_mask(&hw, SNDRV_PCM_HW_PARAM_SUBFORMAT, SNDRV_PCM_SUBFORMAT_STD);
    set_int(&hw, SNDRV_PCM_HW_PARAM_CHANNELS, 2);
    set_int(&hw, SNDRV_PCM_HW_PARAM_RATE, rate);
    set_int(&hw, SNDRV_PCM_HW_PARAM_PERIOD_SIZE, rate / 20);
    set_int(&hw, SNDRV_PCM_HW_PARAM_PERIODS, 8);
    if (ioctl(fd, SNDRV_PCM_IOCTL_HW_REFINE, &hw) < 0) {
        printf("PCMPLAY error HW_REFINE errno=%d (S16_LE stereo %u Hz)\n", errno, rate);
        return 1;
    }
    if (ioctl(fd, SNDRV_PCM_IOCTL_HW_PARAMS, &hw) < 0) {
        printf("PCMPLAY error HW_PARAMS errno=%d\n", errno);
        return 1;
    }
    unsigned period = interval(&hw, SNDRV_PCM_HW_PARAM_PERIOD_SIZE)->min;
    unsigned buffer = interval(&hw, SNDRV_PCM_HW_PARAM_BUFFER_SIZE)->min;
    printf("PCMPLAY hw rate=%u channels=%u period=%u buffer=%u\n",
           interval(&hw, SNDRV_PCM_HW_PARAM_RATE)->min, interval(&hw, SNDRV_PCM_HW_PARAM_CHANNELS)->min,
           period, buffer);

    struct snd_pcm_sw_params sw;
    memset(&sw, 0, sizeof sw);
    sw.tstamp_mode = SNDRV_PCM_TSTAMP_NONE;
    sw.period_step = 1;
    sw.avail_min = period;
    sw.start_threshold = buffer;    /* start once the buffer is full */
    sw.stop_threshold = buffer;     /* an underrun is an xrun, reported */
    sw.silence_threshold = 0;
    sw.silence_size = 0;
    if (ioctl(fd, SNDRV_PCM_IOCTL_SW_PARAMS, &sw) < 0) {
        printf("PCMPLAY error SW_PARAMS errno=%d\n", errno);
        return 1;
    }
    if (ioctl(fd, SNDRV_PCM_IOCTL_PREPARE) < 0) {
        printf("PCMPLAY error PREPARE errno=%d\n", errno);
        return 1;
    }

    long total = frames + pad;
    int16_t *data = calloc((size_t)total * 2, sizeof *data);
    if (!data) {
        printf("PCMPLAY error out of memory\n");
        return 1;
    }
    uint32_t x = seed;
    for (long k = 0; k < frames * 2; k++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data[k] = (int16_t)(uint16_t)(x >> 16);   /* x86 is little-endian: S16_LE as is */
    }

    double start = now();
    long done = 0;
    int xruns = 0;
    while (done < total) {
        struct snd_xferi xfer;
        long n = total - done;
        if (n > (long)period)
            n = period;
        xfer.result = 0;
        xfer.buf = data + done * 2;
        xfer.frames = (snd_pcm_uframes_t)n;
        if (ioctl(fd, SNDRV_PCM_IOCTL_WRITEI_FRAMES, &xfer) < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            if (errno == EPIPE) {
                xruns++;
                printf("PCMPLAY xrun at frame %ld\n", done);
                if (xruns > 10 || ioctl(fd, SNDRV_PCM_IOCTL_PREPARE) < 0)
                    break;
                continue;
            }
            printf("PCMPLAY error WRITEI_FRAMES errno=%d at frame %ld\n", errno, done);
            break;
        }
        done += xfer.result;
    }
    /* A stream shorter than the start threshold would not have started. */
    if (done == total && ioctl(fd, SNDRV_PCM_IOCTL_START) < 0 && errno != EBADFD)
        printf("PCMPLAY note START errno=%d\n", errno);
    int drained = done == total && ioctl(fd, SNDRV_PCM_IOCTL_DRAIN) == 0;
    if (done == total && !drained)
        printf("PCMPLAY error DRAIN errno=%d\n", errno);
    double seconds = now() - start;
    close(fd);
    int ok = done == total && xruns == 0 && drained;
    printf("PCMPLAY result=%s card=%d seed=%u frames=%ld pad=%ld written=%ld xruns=%d seconds=%.2f\n",
           ok ? "pass" : "fail", card, seed, frames, pad, done, xruns, seconds);
    return ok ? 0 : 1;
}
