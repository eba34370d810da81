/*
 * hkd, the per-node daemon.
 *
 *   hkd --config FILE --node NAME      serve this node of a cluster
 *   hkd run --kernel FILE [...]        boot one guest in the foreground
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"

/* Exit statuses of `hkd run` other than the guest's own (always odd). */
#define RUN_ERROR   2
#define RUN_CRASHED 4
#define RUN_TIMEOUT 6

static void usage(FILE *f)
{
	fprintf(f,
		"usage: hkd --config FILE --node NAME\n"
		"       hkd run --kernel FILE [--cmdline STR] [--memory SIZE] [--vcpus N]\n"
		"               [--timeout SECONDS] [--fault-window SIZE]\n"
		"\n"
		"hkd run boots a PVH kernel, prints its serial console on stdout and exits\n"
		"with the guest's debug-exit status ((v << 1) | 1), or 2 on a start-up error,\n"
		"4 if the guest crashed, 6 on timeout.\n");
}

static void console_stdout(void *ctx, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(STDOUT_FILENO, buf, len);

		if (n <= 0)
			return;
		buf += n;
		len -= (size_t)n;
	}
}

static int parse_uint(const char *opt, const char *s, unsigned long max, unsigned long *out)
{
	char *end;

	errno = 0;
	*out = strtoul(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || *out > max) {
		fprintf(stderr, "hkd: %s: bad value '%s' (0 to %lu)\n", opt, s, max);
		return -1;
	}
	return 0;
}

static int cmd_run(int argc, char **argv)
{
	static const struct option opts[] = {
		{"kernel", required_argument, NULL, 'k'},
		{"cmdline", required_argument, NULL, 'c'},
		{"memory", required_argument, NULL, 'm'},
		{"vcpus", required_argument, NULL, 'v'},
		{"timeout", required_argument, NULL, 't'},
		{"fault-window", required_argument, NULL, 'w'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	struct hk_vm_config vc = {.memory = 256ull << 20, .vcpus = 1, .console = console_stdout};
	unsigned long v, timeout = 0;
	struct hk_vm_result r;
	struct hk_vm *vm;
	char err[256];
	int c, ret;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			vc.kernel_path = optarg;
			break;
		case 'c':
			vc.cmdline = optarg;
			break;
		case 'm':
			if (hk_parse_size(optarg, &vc.memory)) {
				fprintf(stderr, "hkd: --memory: bad size '%s'\n", optarg);
				return RUN_ERROR;
			}
			break;
		case 'w':
			if (hk_parse_size(optarg, &vc.fault_window)) {
				fprintf(stderr, "hkd: --fault-window: bad size '%s'\n", optarg);
				return RUN_ERROR;
			}
			break;
		case 'v':
			if (parse_uint("--vcpus", optarg, HK_MAX_VCPUS, &v))
				return RUN_ERROR;
			vc.vcpus = (unsigned)v;
			break;
		case 't':
			if (parse_uint("--timeout", optarg, 86400 * 365, &timeout))
				return RUN_ERROR;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return RUN_ERROR;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "hkd run: unexpected argument '%s'\n", argv[optind]);
		return RUN_ERROR;
	}
	if (!vc.kernel_path) {
		fprintf(stderr, "hkd run: --kernel FILE is required\n");
		return RUN_ERROR;
	}

	signal(SIGPIPE, SIG_IGN);
	ret = hk_vm_create(&vc, &vm, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "hkd: %s\n", err);
		return RUN_ERROR;
	}
	if (hk_vm_start(vm)) {
		fprintf(stderr, "hkd: cannot start vCPUs\n");
		hk_vm_destroy(vm);
		return RUN_ERROR;
	}
	ret = hk_vm_wait(vm, timeout ? (int)(timeout * 1000) : -1, &r);
	hk_vm_stop(vm, "hkd run finished");
	hk_vm_destroy(vm);

	if (ret == -ETIMEDOUT) {
		fprintf(stderr, "hkd: guest still running after %lu s, stopped\n", timeout);
		return RUN_TIMEOUT;
	}
	if (r.state == HK_VM_EXITED)
		return r.exit_status & 0xff;
	fprintf(stderr, "hkd: guest crashed: %s\n", r.reason);
	return RUN_CRASHED;
}

static int cmd_daemon(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"node", required_argument, NULL, 'n'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	const char *path = NULL, *node = NULL;
	static struct hk_config cfg; /* large; one per process */
	char err[512];
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 'n':
			node = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "hkd: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (!path || !node) {
		fprintf(stderr, "hkd: --config FILE and --node NAME are required (or: hkd run ...)\n");
		return 2;
	}
	if (hk_config_load(path, &cfg, err, sizeof(err))) {
		fprintf(stderr, "hkd: %s\n", err);
		return 2;
	}
	return hk_daemon_run(&cfg, node);
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "run"))
		return cmd_run(argc - 1, argv + 1);
	if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout);
		return 0;
	}
	return cmd_daemon(argc, argv);
}
