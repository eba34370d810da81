/*
 * The control server as hkctl sees it: a real Unix socket on a temp path,
 * a tiny echo daemon behind it, and clients that behave, misbehave, crowd
 * in, or stall.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "node.h"

/* Each test ends by stopping its server, so the leak check sees every
 * connection thread joined and freed. */
static void ctl_after(void);
#define NODE_TEST_AFTER() ctl_after()
#include "node_test.h"

/* ---- a tiny daemon ---------------------------------------------------------- */

struct echo {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stopping;
	atomic_int handled, freed, shutdowns, waiting;
};

static struct echo echo = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
};

static void echo_handle(void *ctx, const Hk__Ctl__CtlRequest *req, Hk__Ctl__CtlResponse *rsp)
{
	struct echo *e = ctx;

	atomic_fetch_add(&e->handled, 1);
	switch (req->req_case) {
	case HK__CTL__CTL_REQUEST__REQ_STATUS: {
		Hk__Ctl__StatusReply *st = malloc(sizeof(*st));

		hk__ctl__status_reply__init(st);
		st->node = strdup("echo");
		st->pid = (uint32_t)getpid();
		rsp->rep_case = HK__CTL__CTL_RESPONSE__REP_STATUS;
		rsp->status = st;
		break;
	}
	case HK__CTL__CTL_REQUEST__REQ_GUEST_CONSOLE: {
		/* offset = how many bytes of console to send back */
		Hk__Ctl__ConsoleReply *con = malloc(sizeof(*con));

		hk__ctl__console_reply__init(con);
		con->data.len = req->guest_console->offset;
		con->data.data = malloc(con->data.len + 1);
		memset(con->data.data, 'e', con->data.len);
		con->offset = req->guest_console->offset;
		rsp->rep_case = HK__CTL__CTL_RESPONSE__REP_CONSOLE;
		rsp->console = con;
		break;
	}
	case HK__CTL__CTL_REQUEST__REQ_GUEST_WAIT: {
		/* Blocks like a real guest wait: until the timeout or shutdown. */
		Hk__Ctl__WaitReply *w = malloc(sizeof(*w));
		struct timespec until;

		hk__ctl__wait_reply__init(w);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += req->guest_wait->timeout_ms / 1000;
		until.tv_nsec += (long)(req->guest_wait->timeout_ms % 1000) * 1000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		pthread_mutex_lock(&e->lock);
		atomic_fetch_add(&e->waiting, 1);
		while (!e->stopping && !w->timed_out) {
			if (req->guest_wait->timeout_ms == 0)
				pthread_cond_wait(&e->cond, &e->lock);
			else if (pthread_cond_timedwait(&e->cond, &e->lock, &until) == ETIMEDOUT)
				w->timed_out = 1;
		}
		atomic_fetch_sub(&e->waiting, 1);
		pthread_mutex_unlock(&e->lock);
		rsp->rep_case = HK__CTL__CTL_RESPONSE__REP_WAIT;
		rsp->wait = w;
		break;
	}
	default:
		rsp->error = strdup("echo: not supported");
		break;
	}
}

static void echo_rsp_free(void *ctx, Hk__Ctl__CtlResponse *rsp)
{
	struct echo *e = ctx;

	atomic_fetch_add(&e->freed, 1);
	if (rsp->error != protobuf_c_empty_string)
		free(rsp->error);
	switch (rsp->rep_case) {
	case HK__CTL__CTL_RESPONSE__REP_STATUS:
		free(rsp->status->node);
		free(rsp->status);
		break;
	case HK__CTL__CTL_RESPONSE__REP_CONSOLE:
		free(rsp->console->data.data);
		free(rsp->console);
		break;
	case HK__CTL__CTL_RESPONSE__REP_WAIT:
		free(rsp->wait);
		break;
	default:
		break;
	}
}

static void echo_shutdown(void *ctx)
{
	struct echo *e = ctx;

	atomic_fetch_add(&e->shutdowns, 1);
	pthread_mutex_lock(&e->lock);
	e->stopping = true;
	pthread_cond_broadcast(&e->cond);
	pthread_mutex_unlock(&e->lock);
}

static const struct hk_ctl_ops echo_ops = {
    .size = sizeof(struct hk_ctl_ops),
    .handle = echo_handle,
    .rsp_free = echo_rsp_free,
    .shutdown = echo_shutdown,
};

/* ---- fixture: a temp folder with the socket in it ----------------------------- */

static char dir[64];
static char sock[sizeof(((struct sockaddr_un *)0)->sun_path)];
static struct hk_ctl_server *srv;
static int log_pipe[2] = {-1, -1};

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/hk-ctl-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(sock, sizeof(sock), "%s/n1.sock", dir);
	srv = NULL;
}

static void ctl_after(void)
{
	hk_ctl_server_stop(srv);
	srv = NULL;
}

static void teardown(void)
{
	hk_ctl_server_stop(srv);
	unlink(sock);
	rmdir(dir);
}

TestSuite(ctl, .init = setup, .fini = teardown);

static void start(void)
{
	int ret = hk_ctl_server_start(sock, &echo_ops, &echo, &srv);

	cr_assert_eq(ret, 0, "hk_ctl_server_start: %s", strerror(-ret));
}

/* Capture the server's stderr so tests can read the lines it logs. */
static void capture_stderr(void)
{
	cr_assert_eq(pipe2(log_pipe, O_NONBLOCK | O_CLOEXEC), 0);
	cr_assert_geq(dup2(log_pipe[1], STDERR_FILENO), 0);
}

/* What the server logged, each line's "<program>: " cut off (Criterion's
 * worker process is not called test_node_ctl_server). */
static const char *captured(void)
{
	static char buf[8192], out[8192];
	ssize_t n = read(log_pipe[0], buf, sizeof(buf) - 1);
	char *line, *save = NULL;
	size_t off = 0;

	buf[n > 0 ? n : 0] = '\0';
	out[0] = '\0';
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *msg = strstr(line, ": ");

		off += (size_t)snprintf(out + off, sizeof(out) - off, "%s\n", msg ? msg + 2 : line);
	}
	return out;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Whether the server logs a line containing want within timeout_s. */
static bool logged_within(const char *want, double timeout_s)
{
	static char seen[16384];
	double until = now() + timeout_s;

	seen[0] = '\0';
	do {
		strncat(seen, captured(), sizeof(seen) - strlen(seen) - 1);
		if (strstr(seen, want))
			return true;
		usleep(1000);
	} while (now() < until);
	return false;
}

static int connect_ok(void)
{
	int fd = hk_ctl_connect(sock);

	cr_assert_geq(fd, 0, "hk_ctl_connect: %s", strerror(-fd));
	return fd;
}

/*
 * One status round trip.  Returns 0 on an echo reply, 1 on an error reply
 * (copied to err), or the negative hk_wire_err.  Thread-safe: no asserts.
 */
static int status_call(int fd, char *err, size_t errlen)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__StatusRequest st = HK__CTL__STATUS_REQUEST__INIT;
	Hk__Ctl__CtlResponse *rsp;
	int ret;

	req.version = HK_CTL_VERSION;
	req.req_case = HK__CTL__CTL_REQUEST__REQ_STATUS;
	req.status = &st;
	ret = hk_ctl_call(fd, &req, &rsp);
	if (ret != HK_WIRE_OK)
		return ret;
	if (rsp->error[0]) {
		snprintf(err, errlen, "%s", rsp->error);
		ret = 1;
	} else if (rsp->rep_case != HK__CTL__CTL_RESPONSE__REP_STATUS ||
		   strcmp(rsp->status->node, "echo") || rsp->status->pid != (uint32_t)getpid()) {
		ret = HK_WIRE_GARBAGE;
	}
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);
	return ret;
}

static void assert_works(void)
{
	char err[256] = "";
	int fd = connect_ok();

	cr_assert_eq(status_call(fd, err, sizeof(err)), 0, "status failed: %s", err);
	close(fd);
}

/* Read the one reply a bad client gets, then the server's hang-up. */
static void assert_error_then_closed(int fd, const char *want)
{
	Hk__Ctl__CtlResponse *rsp;
	uint8_t *buf;
	size_t len;

	cr_assert_eq(hk_wire_recv_response(fd, &rsp), HK_WIRE_OK);
	cr_assert_str_eq(rsp->error, want);
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);
	cr_assert_eq(hk_wire_read_frame(fd, HK_CTL_MAX_FRAME, &buf, &len), HK_WIRE_EOF);
}

static void put_raw(int fd, const void *p, size_t len)
{
	cr_assert_eq(write(fd, p, len), (ssize_t)len);
}

static void put_len(int fd, uint32_t n)
{
	uint8_t h[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};

	put_raw(fd, h, 4);
}

/* ---- tests ------------------------------------------------------------------ */

NODE_TEST(ctl, serves_many_requests_per_connection_on_a_0600_socket)
{
	struct stat st;
	char err[256] = "";
	int fd;

	start();
	cr_assert_eq(stat(sock, &st), 0);
	cr_assert(S_ISSOCK(st.st_mode));
	cr_assert_eq(st.st_mode & 07777, 0600, "mode is %o", st.st_mode & 07777);

	fd = connect_ok();
	for (int i = 0; i < 10; i++)
		cr_assert_eq(status_call(fd, err, sizeof(err)), 0, "%s", err);
	close(fd);

	hk_ctl_server_stop(srv);
	srv = NULL;
	cr_assert_eq(access(sock, F_OK), -1, "socket file left behind");
	cr_assert_eq(hk_ctl_connect(sock), -ENOENT);
	cr_assert_eq(atomic_load(&echo.handled), 10);
	cr_assert_eq(atomic_load(&echo.freed), 10);
	cr_assert_eq(atomic_load(&echo.shutdowns), 1);
}

NODE_TEST(ctl, gigabyte_prefix_gets_an_error_and_others_carry_on)
{
	int bad, good;
	char err[256] = "";

	capture_stderr();
	start();
	good = connect_ok(); /* connected before, used after */
	bad = connect_ok();
	put_len(bad, 1u << 30);
	assert_error_then_closed(bad, "control: frame of 1073741824 bytes exceeds limit 4194304");
	close(bad);

	cr_assert_eq(status_call(good, err, sizeof(err)), 0, "%s", err);
	close(good);
	assert_works();
	cr_assert_str_eq(captured(), "control: frame of 1073741824 bytes "
				     "exceeds limit 4194304; closing connection\n");
}

NODE_TEST(ctl, garbage_frame)
{
	static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x07};
	int fd;

	capture_stderr();
	start();
	fd = connect_ok();
	cr_assert_eq(hk_wire_write_frame(fd, junk, sizeof(junk)), HK_WIRE_OK);
	assert_error_then_closed(fd, "control: malformed request of 9 bytes");
	close(fd);
	assert_works();
	cr_assert_str_eq(captured(), "control: malformed request (9 bytes); "
				     "closing connection\n");
	cr_assert_eq(atomic_load(&echo.handled), 1, "garbage reached the handler");
}

NODE_TEST(ctl, half_written_frame_then_close)
{
	int fd;

	capture_stderr();
	start();
	fd = connect_ok();
	put_len(fd, 100);
	put_raw(fd, "0123456789", 10);
	close(fd);
	fd = connect_ok();
	put_raw(fd, "\0\0", 2); /* half a length prefix */
	close(fd);

	assert_works();
	cr_assert_eq(atomic_load(&echo.handled), 1);
	/* Each connection has its own thread: the bad ones may still be
	 * reading when the good one is answered, and a stop before they see
	 * the EOF would cut them off silently (our own shutdown), so wait
	 * for the line rather than stopping first. */
	cr_assert(logged_within("control: truncated frame", 10), "no truncated-frame line");
	hk_ctl_server_stop(srv);
	srv = NULL;
}

NODE_TEST(ctl, wrong_version_and_empty_request_get_error_replies)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__StatusRequest st = HK__CTL__STATUS_REQUEST__INIT;
	Hk__Ctl__CtlResponse *rsp;
	char err[256] = "";
	int fd;

	start();
	fd = connect_ok();
	req.version = 2;
	req.req_case = HK__CTL__CTL_REQUEST__REQ_STATUS;
	req.status = &st;
	cr_assert_eq(hk_ctl_call(fd, &req, &rsp), HK_WIRE_OK);
	cr_assert_str_eq(rsp->error, "control: unsupported protocol version 2 (hkd speaks 1)");
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);

	/* A zero-length frame is an empty request: version 0. */
	cr_assert_eq(hk_wire_write_frame(fd, NULL, 0), HK_WIRE_OK);
	cr_assert_eq(hk_wire_recv_response(fd, &rsp), HK_WIRE_OK);
	cr_assert_str_eq(rsp->error, "control: unsupported protocol version 0 (hkd speaks 1)");
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);

	req.version = HK_CTL_VERSION;
	req.req_case = HK__CTL__CTL_REQUEST__REQ__NOT_SET;
	cr_assert_eq(hk_ctl_call(fd, &req, &rsp), HK_WIRE_OK);
	cr_assert_str_eq(rsp->error, "control: empty or unknown request (hkd speaks version 1)");
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);

	/* Well-formed frames do not cost the connection. */
	cr_assert_eq(status_call(fd, err, sizeof(err)), 0, "%s", err);
	close(fd);
	cr_assert_eq(atomic_load(&echo.handled), 1);
}

NODE_TEST(ctl, oversized_reply_becomes_an_error_reply)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__GuestConsoleRequest con = HK__CTL__GUEST_CONSOLE_REQUEST__INIT;
	Hk__Ctl__CtlResponse *rsp;
	int fd;

	start();
	fd = connect_ok();
	req.version = HK_CTL_VERSION;
	req.req_case = HK__CTL__CTL_REQUEST__REQ_GUEST_CONSOLE;
	req.guest_console = &con;

	con.offset = 1u << 20; /* fits */
	cr_assert_eq(hk_ctl_call(fd, &req, &rsp), HK_WIRE_OK);
	cr_assert_str_eq(rsp->error, "");
	cr_assert_eq(rsp->console->data.len, 1u << 20);
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);

	con.offset = 5u << 20; /* does not */
	cr_assert_eq(hk_ctl_call(fd, &req, &rsp), HK_WIRE_OK);
	cr_assert_not_null(strstr(rsp->error, "control: reply of 524"), "%s", rsp->error);
	cr_assert_not_null(strstr(rsp->error, " bytes exceeds limit 4194304"), "%s", rsp->error);
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);
	close(fd);
	hk_ctl_server_stop(srv); /* joins the worker, which frees after sending */
	srv = NULL;
	cr_assert_eq(atomic_load(&echo.freed), 2, "big reply not released");
}

struct client {
	pthread_t t;
	int ok, busy, failed;
	char why[256];
};

/* 20 round trips; a "too many connections" reply means come back later. */
static void *client_run(void *arg)
{
	struct client *c = arg;
	struct timespec ts = {0, 5 * 1000 * 1000};

	while (c->ok < 20) {
		int fd = hk_ctl_connect(sock), ret;

		if (fd < 0) {
			snprintf(c->why, sizeof(c->why), "connect: %s", strerror(-fd));
			c->failed++;
			return NULL;
		}
		for (int i = 0; i < 5 && c->ok < 20; i++) {
			ret = status_call(fd, c->why, sizeof(c->why));
			if (ret == 1 && strstr(c->why, "too many connections")) {
				c->busy++;
				nanosleep(&ts, NULL);
				break;
			}
			if (ret != 0) {
				c->failed++;
				close(fd);
				return NULL;
			}
			c->ok++;
		}
		close(fd);
	}
	return NULL;
}

NODE_TEST(ctl, forty_concurrent_clients)
{
	static struct client cl[40];

	start();
	for (int i = 0; i < 40; i++)
		cr_assert_eq(pthread_create(&cl[i].t, NULL, client_run, &cl[i]), 0);
	for (int i = 0; i < 40; i++)
		pthread_join(cl[i].t, NULL);
	for (int i = 0; i < 40; i++) {
		cr_assert_eq(cl[i].failed, 0, "client %d: %s", i, cl[i].why);
		cr_assert_eq(cl[i].ok, 20);
	}
	cr_assert_eq(atomic_load(&echo.handled), 800);
	hk_ctl_server_stop(srv);
	srv = NULL;
	cr_assert_eq(atomic_load(&echo.freed), 800);
}

NODE_TEST(ctl, connection_cap)
{
	int held[HK_CTL_MAX_CONNS], fd, ret = -1;
	char err[256] = "";
	double t0;

	capture_stderr();
	start();
	for (int i = 0; i < HK_CTL_MAX_CONNS; i++) {
		held[i] = connect_ok();
		cr_assert_eq(status_call(held[i], err, sizeof(err)), 0, "%s", err);
	}
	fd = connect_ok();
	cr_assert_eq(status_call(fd, err, sizeof(err)), 1);
	cr_assert_str_eq(err, "control: too many connections (32); try again");
	close(fd);
	cr_assert_not_null(
	    strstr(captured(), "control: 32 connections already open; refusing one"));

	/* A slot frees as soon as its worker sees the hang-up. */
	close(held[0]);
	t0 = now();
	while (now() - t0 < 5) {
		fd = connect_ok();
		ret = status_call(fd, err, sizeof(err));
		close(fd);
		if (ret == 0)
			break;
	}
	cr_assert_eq(ret, 0, "slot never freed: %s", err);
	for (int i = 1; i < HK_CTL_MAX_CONNS; i++)
		close(held[i]);
}

struct waiter {
	int fd, ret;
	Hk__Ctl__CtlResponse *rsp;
};

static void *wait_forever(void *arg)
{
	struct waiter *w = arg;
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__GuestWaitRequest gw = HK__CTL__GUEST_WAIT_REQUEST__INIT;

	req.version = HK_CTL_VERSION;
	req.req_case = HK__CTL__CTL_REQUEST__REQ_GUEST_WAIT;
	req.guest_wait = &gw; /* timeout 0: forever */
	w->ret = hk_ctl_call(w->fd, &req, &w->rsp);
	return NULL;
}

/*
 * Stop with every kind of thread alive: a handler blocked in a guest wait,
 * an idle connection, a half-sent frame.  It must return promptly, leave
 * nothing running (ASan/LSan check the rest) and remove the socket.
 */
NODE_TEST(ctl, stop_joins_everything)
{
	struct waiter w = {.ret = -99};
	pthread_t t;
	int idle, half;
	double t0;

	capture_stderr();
	start();
	w.fd = connect_ok();
	cr_assert_eq(pthread_create(&t, NULL, wait_forever, &w), 0);
	idle = connect_ok();
	half = connect_ok();
	put_len(half, 50);
	put_raw(half, "abc", 3);
	t0 = now();
	while (atomic_load(&echo.waiting) == 0 && now() - t0 < 5)
		usleep(1000);
	cr_assert_eq(atomic_load(&echo.waiting), 1, "wait never reached the handler");

	t0 = now();
	hk_ctl_server_stop(srv);
	srv = NULL;
	cr_assert_lt(now() - t0, 2.0, "stop took %.1f s", now() - t0);
	cr_assert_eq(atomic_load(&echo.shutdowns), 1);
	cr_assert_eq(access(sock, F_OK), -1);

	/* The waiter's reply could not be sent after shutdown(2): it sees the
	 * connection end, not a hang. */
	pthread_join(t, NULL);
	cr_assert_eq(w.ret, HK_WIRE_EOF);
	cr_assert_eq(atomic_load(&echo.freed), atomic_load(&echo.handled));
	close(w.fd);
	close(idle);
	close(half);
	/* Cutting connections during stop is not an error worth a log line. */
	cr_assert_str_eq(captured(), "");
}

NODE_TEST(ctl, stale_socket_file_is_replaced)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int fd;

	/* A daemon that died without cleaning up: a socket file nobody serves. */
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	cr_assert_eq(chmod(sock, 0777), 0);
	cr_assert_eq(hk_ctl_connect(sock), -ECONNREFUSED);

	start();
	cr_assert_eq(stat(sock, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0600);
	assert_works();
}

NODE_TEST(ctl, second_server_on_a_live_path_is_refused)
{
	struct hk_ctl_server *other = NULL;

	start();
	cr_assert_eq(hk_ctl_server_start(sock, &echo_ops, &echo, &other), -EADDRINUSE);
	cr_assert_null(other);
	assert_works(); /* the live one kept its socket */
}

NODE_TEST(ctl, never_deletes_a_file_that_is_not_a_socket)
{
	struct hk_ctl_server *other = NULL;
	struct stat st;
	int fd = open(sock, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);

	cr_assert_geq(fd, 0);
	put_raw(fd, "keep", 4);
	close(fd);
	cr_assert_eq(hk_ctl_server_start(sock, &echo_ops, &echo, &other), -EEXIST);
	cr_assert_eq(stat(sock, &st), 0);
	cr_assert(S_ISREG(st.st_mode));
	cr_assert_eq(st.st_size, 4);
}

NODE_TEST(ctl, bad_arguments)
{
	struct hk_ctl_server *other = NULL;
	struct hk_ctl_ops no_handle = {.size = sizeof(no_handle)};
	char longp[200];

	memset(longp, 'a', sizeof(longp) - 1);
	longp[0] = '/';
	longp[sizeof(longp) - 1] = '\0';
	cr_assert_eq(hk_ctl_server_start(longp, &echo_ops, &echo, &other), -ENAMETOOLONG);
	cr_assert_eq(hk_ctl_server_start(sock, &no_handle, &echo, &other), -EINVAL);
	cr_assert_eq(hk_ctl_connect(longp), -ENAMETOOLONG);
	cr_assert_eq(hk_ctl_connect(sock), -ENOENT);
	hk_ctl_server_stop(NULL);
}

/*
 * A client that stops mid-frame loses its connection after
 * HK_CTL_IO_TIMEOUT_MS with an error; one that stays idle between frames is
 * dropped quietly.  Takes the full timeout (10 s).
 */
NODE_TEST(ctl, stalled_clients_time_out)
{
	int half, idle;
	uint8_t *buf;
	size_t len;
	double t0;

	capture_stderr();
	start();
	half = connect_ok();
	idle = connect_ok();
	put_len(half, 50);
	put_raw(half, "abc", 3);
	t0 = now();
	assert_error_then_closed(half, "control: truncated frame (silent for 10000 ms or closed)");
	cr_assert_geq(now() - t0, HK_CTL_IO_TIMEOUT_MS / 1000.0 - 1);
	cr_assert_eq(hk_wire_read_frame(idle, HK_CTL_MAX_FRAME, &buf, &len), HK_WIRE_EOF);
	close(half);
	close(idle);
	assert_works();
	cr_assert_str_eq(captured(), "control: truncated frame (peer closed or "
				     "silent for 10000 ms); closing connection\n");
}
