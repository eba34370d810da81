#include "hk_test.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char *slurp_fd(int fd)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	ssize_t n;

	lseek(fd, 0, SEEK_SET);
	while ((n = read(fd, buf + len, cap - len - 1)) > 0) {
		len += (size_t)n;
		if (cap - len < 2)
			buf = realloc(buf, cap *= 2);
	}
	buf[len] = 0;
	return buf;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int hk_run(char *const argv[], int timeout_s, struct hk_proc_result *r)
{
	FILE *fo = tmpfile(), *fe = tmpfile();
	struct rusage ru;
	double deadline = now_s() + timeout_s;
	int st = 0;
	pid_t parent = getpid(), pid;

	memset(r, 0, sizeof(*r));
	if (!fo || !fe) {
		if (fo)
			fclose(fo);
		if (fe)
			fclose(fe);
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		fclose(fo);
		fclose(fe);
		return -1;
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127); /* the parent is already gone */
		dup2(devnull, 0);
		dup2(fileno(fo), 1);
		dup2(fileno(fe), 2);
		execvp(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	for (;;) {
		pid_t w = wait4(pid, &st, WNOHANG, &ru);

		if (w == pid)
			break;
		if (now_s() > deadline && !r->timed_out) {
			r->timed_out = true;
			kill(pid, SIGKILL);
		}
		usleep(10000);
	}
	r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	r->maxrss_kb = ru.ru_maxrss;
	r->out = slurp_fd(fileno(fo));
	r->err = slurp_fd(fileno(fe));
	fclose(fo);
	fclose(fe);
	return 0;
}

void hk_proc_result_free(struct hk_proc_result *r)
{
	free(r->out);
	free(r->err);
	r->out = r->err = NULL;
}

pid_t hk_spawn(char *const argv[], const char *log_path)
{
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		int devnull = open("/dev/null", O_RDONLY);

		dup2(devnull, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		execv(argv[0], argv);
		_exit(127);
	}
	return pid;
}

int hk_stop(pid_t pid, int grace_s)
{
	double deadline = now_s() + grace_s;
	int st;

	kill(pid, SIGTERM);
	for (;;) {
		pid_t w = waitpid(pid, &st, WNOHANG);

		if (w == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		if (w < 0)
			return -1;
		if (now_s() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return 128 + SIGKILL;
		}
		usleep(10000);
	}
}

bool hk_wait_socket(const char *path, int timeout_s)
{
	double deadline = now_s() + timeout_s;

	while (now_s() < deadline) {
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(fd);
			return true;
		}
		if (fd >= 0)
			close(fd);
		usleep(20000);
	}
	return false;
}

const char *hk_build_path(const char *rel, char *buf, size_t len)
{
	const char *root = getenv("HK_BUILD_ROOT");

	snprintf(buf, len, "%s/%s", root ? root : ".", rel);
	return buf;
}

char *hk_write_temp(const char *tag, const void *data, size_t len)
{
	char *path;
	int fd;

	if (asprintf(&path, "/tmp/hk-test-%s-XXXXXX", tag) < 0)
		return NULL;
	fd = mkstemp(path);
	if (fd < 0) {
		free(path);
		return NULL;
	}
	if (write(fd, data, len) != (ssize_t)len) {
		close(fd);
		unlink(path);
		free(path);
		return NULL;
	}
	close(fd);
	return path;
}

int hk_count(const char *hay, const char *needle)
{
	int n = 0;
	size_t l = strlen(needle);

	while (l && (hay = strstr(hay, needle))) {
		n++;
		hay += l;
	}
	return n;
}

int hk_lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

const char *hk_line_with(const char *s, const char *prefix, char *buf, size_t size)
{
	size_t plen = strlen(prefix);

	for (const char *p = s; *p;) {
		size_t n = strcspn(p, "\n");

		if (strncmp(p, prefix, plen) == 0) {
			snprintf(buf, size, "%.*s", (int)n, p);
			return buf;
		}
		p += n + (p[n] == '\n');
	}
	buf[0] = '\0';
	return buf;
}

bool hk_in_path(const char *prog)
{
	const char *path = getenv("PATH");
	char buf[4096];

	while (path && *path) {
		size_t n = strcspn(path, ":");
		int len = snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, path, prog);

		if (n && len > 0 && (size_t)len < sizeof(buf) && access(buf, X_OK) == 0)
			return true;
		path += n + (path[n] == ':');
	}
	return false;
}

bool hk_fixture_init(struct hk_daemon_fixture *fx, const char *tag)
{
	memset(fx, 0, sizeof(*fx));
	hk_build_path("node/hkd", fx->hkd, sizeof(fx->hkd));
	hk_build_path("node/hkctl", fx->hkctl, sizeof(fx->hkctl));
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/hk-%s-XXXXXX", tag);
	if (!mkdtemp(fx->dir)) {
		fx->dir[0] = '\0'; /* nothing for cleanup to remove */
		return false;
	}
	snprintf(fx->conf, sizeof(fx->conf), "%s/hk.conf", fx->dir);
	snprintf(fx->sock, sizeof(fx->sock), "%s/n1.sock", fx->dir);
	snprintf(fx->log, sizeof(fx->log), "%s/n1.log", fx->dir);
	return true;
}

bool hk_fixture_start(struct hk_daemon_fixture *fx)
{
	char *argv[] = {fx->hkd, "--config", fx->conf, "--node", "n1", NULL};
	int st;

	fx->pid = hk_spawn(argv, fx->log);
	/* A second at a time, so an hkd that exited at once (a config it
	 * refuses) is noticed within one, not after the whole 20 s. */
	for (int i = 0; fx->pid > 0 && i < 20; i++) {
		if (hk_wait_socket(fx->sock, 1))
			return true;
		if (waitpid(fx->pid, &st, WNOHANG) == fx->pid) {
			fprintf(stderr, "hkd exited (%#x) before opening %s; see %s\n", st,
				fx->sock, fx->log);
			fx->pid = 0;
			return false;
		}
	}
	hk_fixture_stop(fx);
	return false;
}

int hk_fixture_stop(struct hk_daemon_fixture *fx)
{
	int st = -1;

	if (fx->pid > 0)
		st = hk_stop(fx->pid, 10);
	fx->pid = 0;
	return st;
}

void hk_fixture_cleanup(struct hk_daemon_fixture *fx)
{
	char cmd[256];

	hk_fixture_stop(fx);
	if (!fx->dir[0])
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", fx->dir);
	if (system(cmd))
		fprintf(stderr, "cannot remove %s\n", fx->dir);
	fx->dir[0] = '\0';
}

pid_t hk_read_pid(const char *path)
{
	long pid = 0;
	FILE *f = fopen(path, "r");

	if (!f)
		return 0;
	if (fscanf(f, "%ld", &pid) != 1)
		pid = 0;
	fclose(f);
	return (pid_t)pid;
}

bool hk_kvm_has_stats(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC), has;

	if (fd < 0)
		return false;
	has = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_BINARY_STATS_FD);
	close(fd);
	return has > 0;
}
