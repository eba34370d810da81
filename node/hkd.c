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
	fprintf(f, "usage: hkd --config FILE --node NAME\n"
		   "       hkd run --kernel FILE [--cmdline STR] [--memory SIZE] [--vcpus N]\n"
		   "               [--timeout SECONDS] [--fault-window SIZE] [--disk FILE]...\n"
		   "               [--replicas on|off] [--write-tracking auto|uffd|kvm] [--stats]\n"
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
	    {"disk", required_argument, NULL, 'd'},
	    {"replicas", required_argument, NULL, 'r'},
	    {"write-tracking", required_argument, NULL, 'W'},
	    {"stats", no_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	struct hk_vm_config vc = {.memory = 256ull << 20, .vcpus = 1, .console = console_stdout};
	unsigned long v, timeout = 0;
	const char *disk_paths[HK_VM_MAX_DISKS];
	struct hk_vm_disk disks[HK_VM_MAX_DISKS] = {0};
	unsigned n_disks = 0;
	bool replicas = true, stats = false;
	struct hk_replica *table = NULL;
	struct hk_vm_result r;
	struct hk_vm *vm = NULL;
	char err[512];
	int c, ret, status = RUN_ERROR;

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
		case 'd':
			if (n_disks == HK_VM_MAX_DISKS) {
				fprintf(stderr, "hkd: at most %d --disk\n", HK_VM_MAX_DISKS);
				return RUN_ERROR;
			}
			disk_paths[n_disks++] = optarg;
			break;
		case 'r':
			if (strcmp(optarg, "on") && strcmp(optarg, "off")) {
				fprintf(stderr, "hkd: --replicas: want on or off, not '%s'\n", optarg);
				return RUN_ERROR;
			}
			replicas = !strcmp(optarg, "on");
			break;
		case 'W': {
			enum hk_wt_conf wt;

			if (hk_parse_write_tracking(optarg, &wt)) {
				fprintf(stderr,
					"hkd: --write-tracking: want auto, uffd or kvm, not '%s'\n",
					optarg);
				return RUN_ERROR;
			}
			vc.write_tracking = (enum hk_write_tracking)wt;
			break;
		}
		case 's':
			stats = true;
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
	for (unsigned i = 0; i < n_disks; i++) {
		char name[16];
		struct hk_disk_config dc = {.name = name, .path = disk_paths[i]};

		snprintf(name, sizeof(name), "d%u", i);
		if (hk_disk_open(&dc, &disks[i].disk, err, sizeof(err))) {
			fprintf(stderr, "hkd: %s\n", err);
			goto out;
		}
		disks[i].id = (uint16_t)i;
	}
	if (n_disks && replicas && hk_replica_create(&table)) {
		fprintf(stderr, "hkd: out of memory for the replica table\n");
		goto out;
	}
	vc.disks = disks;
	vc.n_disks = n_disks;
	vc.replicas = table;
	ret = hk_vm_create(&vc, &vm, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "hkd: %s\n", err);
		goto out;
	}
	if (hk_vm_start(vm)) {
		fprintf(stderr, "hkd: cannot start vCPUs\n");
		goto out;
	}
	ret = hk_vm_wait(vm, timeout ? (int)(timeout * 1000) : -1, &r);
	if (stats) {
		struct hk_vm_stats st;
		struct hk_replica_stats rs = {0};
		uint64_t entries;

		/* Before the stop: the TSC rate is read from a live vCPU. */
		hk_vm_get_stats(vm, &st);
		hk_mem_harvest_all(hk_vm_mem(vm)); /* entries the guest broke go first */
		if (table)
			hk_replica_get_stats(table, &rs);
		entries = rs.entries;
		fprintf(
		    stderr,
		    "hkd: stats tsc_khz=%llu runtime_ms=%llu vcpu_exits=%llu uffd_faults=%llu "
		    "resident_pages=%llu wp_faults=%llu bytes_from_disk=%llu "
		    "bytes_from_replicas=%llu bytes_written=%llu bad_requests=%llu "
		    "write_tracking=%s harvests=%llu false_alarms=%llu replica_entries=%llu\n",
		    (unsigned long long)hk_vm_tsc_khz(vm),
		    (unsigned long long)(r.runtime_ns / 1000000), (unsigned long long)st.vcpu_exits,
		    (unsigned long long)st.mem.faults, (unsigned long long)st.mem.resident_pages,
		    (unsigned long long)st.mem.wp_faults, (unsigned long long)st.bytes_from_disk,
		    (unsigned long long)st.bytes_from_replicas,
		    (unsigned long long)st.bytes_written, (unsigned long long)st.bad_requests,
		    hk_mem_tracking(hk_vm_mem(vm)), (unsigned long long)st.mem.harvests,
		    (unsigned long long)st.mem.false_alarms, (unsigned long long)entries);
	}
	hk_vm_stop(vm, "hkd run finished");
	if (ret == -ETIMEDOUT) {
		fprintf(stderr, "hkd: guest still running after %lu s, stopped\n", timeout);
		status = RUN_TIMEOUT;
	} else if (r.state == HK_VM_EXITED) {
		status = r.exit_status & 0xff;
	} else {
		fprintf(stderr, "hkd: guest crashed: %s\n", r.reason);
		status = RUN_CRASHED;
	}
out:
	hk_vm_destroy(vm);
	for (unsigned i = 0; i < n_disks; i++) {
		if (disks[i].disk)
			hk_disk_flush(disks[i].disk);
		hk_disk_close(disks[i].disk);
	}
	if (table)
		hk_replica_destroy(table);
	return status;
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
