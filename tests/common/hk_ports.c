/*
 * TCP ports for test clusters that cannot collide between test processes
 * running at once.  Probing for a free port and letting it go is a race:
 * the daemons bind it later, and another test binary (or any bind to port
 * 0, or an outgoing connection) may take it in between, which is how
 * kvdb-disk-on-other-node met "address 127.0.0.1:24424 ... in use".
 *
 * So ports come in blocks of HK_FREE_PORTS_MAX from [PORT_LO, PORT_HI),
 * below Linux's default ephemeral range (32768 up), which the kernel never
 * hands out for port 0 or connect().  A process owns a block while it holds
 * an flock on LOCK_DIR/BLOCK; the lock goes with the process (the fd is
 * close-on-exec, so daemons do not inherit it), and no other process gets
 * that block meanwhile.  A block with a port that something else holds now
 * (a daemon of a test that died) is passed over.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hk_test.h"

#define PORT_LO 20000
#define PORT_HI 32768 /* or the ephemeral range's start, if lower */

/* This process's block: a global, since the lock must live as long as the
 * process; owner tells a forked child (Criterion forks per test) that the
 * block it sees is its parent's. */
static struct {
	pid_t owner;
	int lock_fd;
	int base;
	unsigned used;
} block = {.lock_fd = -1};

static bool port_free(int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	if (fd < 0)
		return false;
	/* No SO_REUSEADDR: a port with connections of an earlier daemon in
	 * TIME_WAIT counts as taken, as it may for a provider's bind. */
	ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

static int lock_dir(char *dir, size_t len)
{
	snprintf(dir, len, "/tmp/hk-ports-%u", (unsigned)getuid());
	if (mkdir(dir, 0700) && errno != EEXIST)
		return -errno;
	return 0;
}

/* How many blocks fit below the kernel's ephemeral ports. */
static unsigned blocks(void)
{
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
	int lo = PORT_HI, hi;

	if (f) {
		if (fscanf(f, "%d %d", &lo, &hi) != 2 || lo > PORT_HI)
			lo = PORT_HI;
		fclose(f);
	}
	return lo > PORT_LO ? (unsigned)(lo - PORT_LO) / HK_FREE_PORTS_MAX : 0;
}

/* Take the first block from start on whose lock is ours and whose ports are free. */
static int block_take(unsigned start)
{
	char dir[64], path[96];
	unsigned n = blocks();
	int ret = lock_dir(dir, sizeof(dir));

	if (ret)
		return ret;
	for (unsigned i = 0; i < n; i++) {
		unsigned b = (start + i) % n;
		int base = PORT_LO + (int)b * HK_FREE_PORTS_MAX, fd, p;

		snprintf(path, sizeof(path), "%s/%u", dir, b);
		fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0)
			return -errno;
		if (flock(fd, LOCK_EX | LOCK_NB)) {
			close(fd);
			continue; /* another test process owns it */
		}
		for (p = base; p < base + HK_FREE_PORTS_MAX && port_free(p); p++)
			;
		if (p < base + HK_FREE_PORTS_MAX) {
			close(fd);
			continue;
		}
		block.owner = getpid();
		block.lock_fd = fd;
		block.base = base;
		block.used = 0;
		return 0;
	}
	return -EADDRINUSE;
}

int hk_free_ports(unsigned n, int *ports)
{
	int ret;

	if (n == 0 || n > HK_FREE_PORTS_MAX)
		return -EINVAL;
	if (block.owner != getpid() || block.used + n > HK_FREE_PORTS_MAX) {
		/* Start past our own used-up block, which stays locked (its
		 * daemons may still run), or anywhere (by pid) in a fresh
		 * process.  A parent's lock fd is shared with it: left open. */
		unsigned start = (unsigned)getpid();

		if (block.owner == getpid())
			start = (unsigned)(block.base - PORT_LO) / HK_FREE_PORTS_MAX + 1;
		ret = block_take(start);
		if (ret)
			return ret;
	}
	for (unsigned i = 0; i < n; i++)
		ports[i] = block.base + (int)block.used + (int)i;
	block.used += n;
	return 0;
}

int hk_port_base_env(unsigned n)
{
	char base[16];
	int ports[HK_FREE_PORTS_MAX], ret = hk_free_ports(n, ports);

	if (ret)
		return ret;
	/* deploy/cluster.sh gives node i port HK_PORT_BASE + i, i from 1 */
	snprintf(base, sizeof(base), "%d", ports[0] - 1);
	return setenv("HK_PORT_BASE", base, 1) ? -errno : 0;
}
