/*
 * hk_free_ports, which every multi-node test takes its daemons' ports
 * from: the ports must stay this test process's until it ends, whatever
 * other test binaries run at once, because the daemons bind them later.
 * No daemon is started here.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hk_test.h"

#define CHILDREN 8

static int ephemeral_low(void)
{
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
	int lo = 32768, hi;

	if (f) {
		if (fscanf(f, "%d %d", &lo, &hi) != 2)
			lo = 32768;
		fclose(f);
	}
	return lo;
}

Test(ports, outside_the_ephemeral_range_and_never_handed_out_twice)
{
	int a[HK_FREE_PORTS_MAX], b[4], lo = ephemeral_low();

	cr_assert_eq(hk_free_ports(HK_FREE_PORTS_MAX, a), 0);
	cr_assert_eq(hk_free_ports(4, b), 0);
	for (int i = 0; i < HK_FREE_PORTS_MAX; i++) {
		/* the kernel gives ephemeral ports to any bind(0) or connect() */
		cr_assert_lt(a[i], lo, "port %d is in the ephemeral range (from %d)", a[i], lo);
		cr_assert_geq(a[i], 1024);
		if (i)
			cr_assert_eq(a[i], a[i - 1] + 1, "not consecutive: %d, %d", a[i - 1], a[i]);
		for (int k = 0; k < 4; k++)
			cr_assert_neq(a[i], b[k], "port %d handed out twice", a[i]);
	}
	cr_assert_eq(hk_free_ports(HK_FREE_PORTS_MAX + 1, a), -EINVAL);
}

/*
 * Test binaries run at once are separate processes: CHILDREN of them take
 * ports together, each keeping them (as its daemons would) until all have
 * taken theirs, and no port is given to two of them, nor one of ours.
 */
Test(ports, processes_running_at_once_never_share_a_port)
{
	static int all[(CHILDREN + 1) * HK_FREE_PORTS_MAX];
	int out[2], hold[2], n = HK_FREE_PORTS_MAX;
	pid_t kids[CHILDREN];

	cr_assert_eq(hk_free_ports(HK_FREE_PORTS_MAX, all), 0);
	cr_assert_eq(pipe(out), 0);
	cr_assert_eq(pipe(hold), 0);
	for (int c = 0; c < CHILDREN; c++) {
		kids[c] = fork();
		cr_assert_geq(kids[c], 0);
		if (kids[c] == 0) {
			int p[HK_FREE_PORTS_MAX];
			char x;

			close(out[0]);
			close(hold[1]);
			if (hk_free_ports(HK_FREE_PORTS_MAX, p) ||
			    write(out[1], p, sizeof(p)) != (ssize_t)sizeof(p))
				_exit(1);
			/* keep them until the parent has everyone's */
			_exit(read(hold[0], &x, 1) == 0 ? 0 : 1);
		}
	}
	close(out[1]);
	close(hold[0]);
	for (int c = 0; c < CHILDREN; c++) {
		ssize_t got = read(out[0], all + n, HK_FREE_PORTS_MAX * sizeof(int));

		cr_assert_eq(got, (ssize_t)(HK_FREE_PORTS_MAX * sizeof(int)), "child %d: %zd", c,
			     got);
		n += HK_FREE_PORTS_MAX;
	}
	close(hold[1]); /* now they may let go */
	for (int c = 0; c < CHILDREN; c++) {
		int st;

		cr_assert_eq(waitpid(kids[c], &st, 0), kids[c]);
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d: %#x", c, st);
	}
	for (int i = 0; i < n; i++)
		for (int k = i + 1; k < n; k++)
			cr_assert_neq(all[i], all[k], "port %d given to two processes", all[i]);
	close(out[0]);
}
