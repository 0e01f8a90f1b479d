/*
 * usbtest-run: runs cases of the Linux kernel's USB test driver (usbtest,
 * drivers/usb/misc/usbtest.c) against a device it is bound to, and prints
 * one line per case. The driver takes its requests through usbfs: an
 * USBDEVFS_IOCTL on the device node, addressed to interface 0, carrying the
 * driver's own request code USBTEST_REQUEST and its parameter block.
 *
 * Usage: usbtest-run [-i ITERATIONS] [-l LENGTH] [-v VARY] [-s SGLEN]
 *                    [-t SECONDS] [-R] VID:PID CASE...
 * -R first resets the device (USBDEVFS_RESET on its node, as a guest
 * driver's reset does: the port is reset and the device set up again) and
 * prints "USBTEST reset result=pass|fail errno=NAME seconds=S"; with -R the
 * cases may be left out. A failed reset exits 1 without running cases.
 * Output, per case:
 *   USBTEST case=N result=pass|fail|unsupported|timeout errno=NAME seconds=S
 * "unsupported": the driver answered EOPNOTSUPP (the device lacks what the
 * case needs, e.g. iso endpoints). Each case runs in a child process: one
 * that outlives SECONDS is reported as a timeout and left behind (a case
 * stuck in the kernel cannot be killed anyway). It holds the driver's lock,
 * so every later case would wait for it too: they are reported
 * "result=not-run" instead of being tried.
 * Exit status: 0 when every case ran (whatever its result), 2 on misuse or
 * when the device is not there.
 *
 * Built static by scripts/build-guest.sh for the test guest and the lab host.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/usbdevice_fs.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The driver's parameter block, as a 64-bit process passes it (the layout
 * and request number are the driver's ABI: 'U' 100, inputs then the
 * duration it measured). */
struct test_request {
	uint32_t test_num, iterations, length, vary, sglen;
	int64_t duration_sec, duration_usec;
};
#define TEST_REQUEST _IOWR('U', 100, struct test_request)

static unsigned read_hex_file(const char *dir, const char *name)
{
	char path[512], buf[32] = "";
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0xffffffffu;
	if (!fgets(buf, sizeof buf, f))
		buf[0] = 0;
	fclose(f);
	return (unsigned)strtoul(buf, NULL, 16);
}

/* The /dev/bus/usb node of the first device with these ids (sysfs). */
static int find_device(unsigned vid, unsigned pid, char *node, size_t size)
{
	DIR *d = opendir("/sys/bus/usb/devices");
	struct dirent *e;
	int found = 0;
	if (!d)
		return 0;
	while (!found && (e = readdir(d))) {
		char dir[300];
		if (e->d_name[0] == '.' || strchr(e->d_name, ':'))
			continue; /* interfaces */
		snprintf(dir, sizeof dir, "/sys/bus/usb/devices/%s", e->d_name);
		if (read_hex_file(dir, "idVendor") != vid || read_hex_file(dir, "idProduct") != pid)
			continue;
		/* busnum and devnum are decimal */
		char p[400], b[16] = "", n[16] = "";
		FILE *f;
		snprintf(p, sizeof p, "%s/busnum", dir);
		if ((f = fopen(p, "r"))) { if (!fgets(b, sizeof b, f)) b[0] = 0; fclose(f); }
		snprintf(p, sizeof p, "%s/devnum", dir);
		if ((f = fopen(p, "r"))) { if (!fgets(n, sizeof n, f)) n[0] = 0; fclose(f); }
		snprintf(node, size, "/dev/bus/usb/%03d/%03d", atoi(b), atoi(n));
		found = 1;
	}
	closedir(d);
	return found;
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* In the child: one request; the exit code carries errno (0 = passed). */
static int run_case(const char *node, struct test_request *req)
{
	int fd = open(node, O_RDWR);
	if (fd < 0)
		return errno;
	struct usbdevfs_ioctl wrap = { .ifno = 0, .ioctl_code = TEST_REQUEST, .data = req };
	int rc = ioctl(fd, USBDEVFS_IOCTL, &wrap);
	int err = rc < 0 ? errno : 0;
	close(fd);
	return err;
}

/* USBDEVFS_RESET on the node: usb_reset_device in the kernel (drivers
 * without reset hooks, usbtest among them, are unbound and bound again). */
static int reset_device(const char *node)
{
	double start = now();
	int fd = open(node, O_RDWR);
	int err = fd < 0 ? errno : ioctl(fd, USBDEVFS_RESET, 0) < 0 ? errno : 0;
	if (fd >= 0)
		close(fd);
	printf("USBTEST reset result=%s errno=%s seconds=%.3f\n", err ? "fail" : "pass",
	       err ? (strerrorname_np(err) ? strerrorname_np(err) : "?") : "0", now() - start);
	fflush(stdout);
	return err;
}

int main(int argc, char **argv)
{
	struct test_request base = { .iterations = 100, .length = 1024, .vary = 512, .sglen = 32 };
	double limit = 60;
	int opt, reset = 0;
	while ((opt = getopt(argc, argv, "i:l:v:s:t:R")) != -1) {
		switch (opt) {
		case 'R': reset = 1; break;
		case 'i': base.iterations = strtoul(optarg, NULL, 0); break;
		case 'l': base.length = strtoul(optarg, NULL, 0); break;
		case 'v': base.vary = strtoul(optarg, NULL, 0); break;
		case 's': base.sglen = strtoul(optarg, NULL, 0); break;
		case 't': limit = atof(optarg); break;
		default: goto usage;
		}
	}
	unsigned vid, pid;
	if (argc - optind < (reset ? 1 : 2) || sscanf(argv[optind], "%x:%x", &vid, &pid) != 2)
		goto usage;
	char node[64];
	if (!find_device(vid, pid, node, sizeof node)) {
		printf("USBTEST error no-device %04x:%04x\n", vid, pid);
		return 2;
	}
	printf("USBTEST device %04x:%04x node=%s iterations=%u length=%u vary=%u sglen=%u\n",
	       vid, pid, node, base.iterations, base.length, base.vary, base.sglen);
	fflush(stdout);
	if (reset && reset_device(node))
		return 1;

	int hung = 0;
	for (int a = optind + 1; a < argc; a++) {
		struct test_request req = base;
		req.test_num = strtoul(argv[a], NULL, 10);
		if (hung) {
			printf("USBTEST case=%u result=not-run errno=0 seconds=0\n", req.test_num);
			continue;
		}
		double start = now();
		pid_t child = fork();
		if (child == 0)
			_exit(run_case(node, &req));
		int status = 0, done = 0;
		while (!done && now() - start < limit) {
			if (waitpid(child, &status, WNOHANG) == child)
				done = 1;
			else
				usleep(10000);
		}
		const char *result, *name = "0";
		if (!done) {
			kill(child, SIGKILL); /* may stay in the kernel; not waited for */
			result = "timeout";
			hung = 1;
		} else {
			int err = WIFEXITED(status) ? WEXITSTATUS(status) : EINTR;
			result = err == 0 ? "pass" : err == EOPNOTSUPP ? "unsupported" : "fail";
			if (err)
				name = strerrorname_np(err) ? strerrorname_np(err) : "?";
		}
		printf("USBTEST case=%u result=%s errno=%s seconds=%.3f\n", req.test_num, result, name, now() - start);
		fflush(stdout);
	}
	return 0;
usage:
	fprintf(stderr, "usage: usbtest-run [-i N] [-l LEN] [-v VARY] [-s SGLEN] [-t SECONDS] [-R] VID:PID CASE...\n");
	return 2;
}
