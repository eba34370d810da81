/*
 * Control framing over a real socketpair: what arrives is what was sent,
 * and hostile or broken frames are refused the way node.h promises.
 */
#include "node_test.h"
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "node.h"

static int sp[2];

static void pair_init(void)
{
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
}

static void pair_fini(void)
{
	if (sp[0] >= 0)
		close(sp[0]);
	if (sp[1] >= 0)
		close(sp[1]);
}

TestSuite(wire, .init = pair_init, .fini = pair_fini);

static void put_raw(int fd, const void *p, size_t len)
{
	cr_assert_eq(write(fd, p, len), (ssize_t)len);
}

static void put_len(int fd, uint32_t n)
{
	uint8_t h[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};

	put_raw(fd, h, 4);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

NODE_TEST(wire, request_round_trip)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__GuestStartRequest start = HK__CTL__GUEST_START_REQUEST__INIT;
	Hk__Ctl__CtlRequest *got;

	req.version = HK_CTL_VERSION;
	req.req_case = HK__CTL__CTL_REQUEST__REQ_GUEST_START;
	req.guest_start = &start;
	start.kernel = "/boot/guest.elf";
	start.cmdline = "console=hk";

	cr_assert_eq(hk_wire_send_request(sp[0], &req), HK_WIRE_OK);
	cr_assert_eq(hk_wire_send_request(sp[0], &req), HK_WIRE_OK); /* two frames back to back */
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(hk_wire_recv_request(sp[1], &got), HK_WIRE_OK);
		cr_assert_eq(got->version, HK_CTL_VERSION);
		cr_assert_eq(got->req_case, HK__CTL__CTL_REQUEST__REQ_GUEST_START);
		cr_assert_str_eq(got->guest_start->kernel, "/boot/guest.elf");
		cr_assert_str_eq(got->guest_start->cmdline, "console=hk");
		hk__ctl__ctl_request__free_unpacked(got, NULL);
	}
}

struct sender {
	int fd;
	const Hk__Ctl__CtlResponse *rsp;
	int ret;
};

static void *send_rsp(void *arg)
{
	struct sender *s = arg;

	s->ret = hk_wire_send_response(s->fd, s->rsp);
	return NULL;
}

/* 3 MiB does not fit a socket buffer: exercises short writes and reads. */
NODE_TEST(wire, large_response_round_trip)
{
	Hk__Ctl__CtlResponse rsp = HK__CTL__CTL_RESPONSE__INIT, *got;
	Hk__Ctl__ConsoleReply con = HK__CTL__CONSOLE_REPLY__INIT;
	size_t n = 3u << 20;
	uint8_t *data = malloc(n);
	struct sender s = {sp[0], &rsp, -99};
	pthread_t t;

	for (size_t i = 0; i < n; i++)
		data[i] = (uint8_t)(i * 7 + (i >> 12));
	con.data.data = data;
	con.data.len = n;
	con.offset = 12345;
	con.total = n + 12345;
	rsp.rep_case = HK__CTL__CTL_RESPONSE__REP_CONSOLE;
	rsp.console = &con;

	cr_assert_eq(pthread_create(&t, NULL, send_rsp, &s), 0);
	cr_assert_eq(hk_wire_recv_response(sp[1], &got), HK_WIRE_OK);
	pthread_join(t, NULL);
	cr_assert_eq(s.ret, HK_WIRE_OK);
	cr_assert_eq(got->rep_case, HK__CTL__CTL_RESPONSE__REP_CONSOLE);
	cr_assert_eq(got->console->offset, 12345);
	cr_assert_eq(got->console->data.len, n);
	cr_assert_arr_eq(got->console->data.data, data, n);
	hk__ctl__ctl_response__free_unpacked(got, NULL);
	free(data);
}

NODE_TEST(wire, oversized_messages_are_not_sent)
{
	Hk__Ctl__CtlResponse rsp = HK__CTL__CTL_RESPONSE__INIT;
	Hk__Ctl__ConsoleReply con = HK__CTL__CONSOLE_REPLY__INIT;
	uint8_t *data = calloc(1, HK_CTL_MAX_FRAME + 1);

	con.data.data = data;
	con.data.len = HK_CTL_MAX_FRAME;
	rsp.rep_case = HK__CTL__CTL_RESPONSE__REP_CONSOLE;
	rsp.console = &con;
	cr_assert_eq(hk_wire_send_response(sp[0], &rsp), HK_WIRE_TOO_BIG);
	cr_assert_eq(hk_wire_write_frame(sp[0], data, HK_CTL_MAX_FRAME + 1), HK_WIRE_TOO_BIG);
	free(data);
}

NODE_TEST(wire, zero_length_frame_is_an_empty_message)
{
	Hk__Ctl__CtlRequest *req;
	uint8_t *buf = (uint8_t *)"x";
	size_t len = 99;

	cr_assert_eq(hk_wire_write_frame(sp[0], NULL, 0), HK_WIRE_OK);
	cr_assert_eq(hk_wire_read_frame(sp[1], HK_CTL_MAX_FRAME, &buf, &len), HK_WIRE_OK);
	cr_assert_null(buf);
	cr_assert_eq(len, 0);

	put_len(sp[0], 0);
	cr_assert_eq(hk_wire_recv_request(sp[1], &req), HK_WIRE_OK);
	cr_assert_eq(req->version, 0);
	cr_assert_eq(req->req_case, HK__CTL__CTL_REQUEST__REQ__NOT_SET);
	hk__ctl__ctl_request__free_unpacked(req, NULL);
}

NODE_TEST(wire, clean_eof_between_frames)
{
	Hk__Ctl__CtlRequest *req;

	close(sp[0]);
	sp[0] = -1;
	cr_assert_eq(hk_wire_recv_request(sp[1], &req), HK_WIRE_EOF);
	cr_assert_null(req);
}

NODE_TEST(wire, truncated_length)
{
	uint8_t *buf;
	size_t len;

	put_raw(sp[0], "\0\0", 2);
	close(sp[0]);
	sp[0] = -1;
	cr_assert_eq(hk_wire_read_frame(sp[1], HK_CTL_MAX_FRAME, &buf, &len), HK_WIRE_TRUNCATED);
	cr_assert_null(buf);
}

NODE_TEST(wire, truncated_body)
{
	Hk__Ctl__CtlRequest *req;

	put_len(sp[0], 100);
	put_raw(sp[0], "0123456789", 10);
	close(sp[0]);
	sp[0] = -1;
	cr_assert_eq(hk_wire_recv_request(sp[1], &req), HK_WIRE_TRUNCATED);
	cr_assert_null(req);
}

/*
 * A 1 GiB prefix is refused at once: nothing is allocated for it and not a
 * byte past the prefix is consumed (the bytes after it are still there).
 */
NODE_TEST(wire, gigabyte_prefix_refused_without_reading)
{
	uint8_t *buf = (uint8_t *)"x", after[5];
	size_t len = 0;
	double t0;

	put_len(sp[0], 1u << 30);
	put_raw(sp[0], "AFTER", 5);
	t0 = now();
	cr_assert_eq(hk_wire_read_frame(sp[1], HK_CTL_MAX_FRAME, &buf, &len), HK_WIRE_TOO_BIG);
	cr_assert_lt(now() - t0, 0.5);
	cr_assert_null(buf);
	cr_assert_eq(len, 1u << 30, "refused length is reported");
	cr_assert_eq(read(sp[1], after, 5), 5);
	cr_assert_arr_eq(after, "AFTER", 5);

	put_len(sp[0], 0xffffffffu);
	cr_assert_eq(hk_wire_read_frame(sp[1], HK_CTL_MAX_FRAME, &buf, &len), HK_WIRE_TOO_BIG);
	cr_assert_eq(len, 0xffffffffu);
}

NODE_TEST(wire, limit_is_inclusive)
{
	uint8_t *buf;
	size_t len;

	put_len(sp[0], 8);
	put_raw(sp[0], "12345678", 8);
	cr_assert_eq(hk_wire_read_frame(sp[1], 8, &buf, &len), HK_WIRE_OK);
	cr_assert_eq(len, 8);
	free(buf);
	put_len(sp[0], 9);
	cr_assert_eq(hk_wire_read_frame(sp[1], 8, &buf, &len), HK_WIRE_TOO_BIG);
}

NODE_TEST(wire, garbage_body)
{
	/* Wire type 7 does not exist; no parser can take this as a message. */
	static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x07};
	Hk__Ctl__CtlRequest *req;
	Hk__Ctl__CtlResponse *rsp;

	cr_assert_eq(hk_wire_write_frame(sp[0], junk, sizeof(junk)), HK_WIRE_OK);
	cr_assert_eq(hk_wire_recv_request(sp[1], &req), HK_WIRE_GARBAGE);
	cr_assert_null(req);
	cr_assert_eq(hk_wire_write_frame(sp[0], junk, sizeof(junk)), HK_WIRE_OK);
	cr_assert_eq(hk_wire_recv_response(sp[1], &rsp), HK_WIRE_GARBAGE);
	cr_assert_null(rsp);

	/* The stream is still in step: the next frame reads fine. */
	cr_assert_eq(hk_wire_write_frame(sp[0], NULL, 0), HK_WIRE_OK);
	cr_assert_eq(hk_wire_recv_request(sp[1], &req), HK_WIRE_OK);
	hk__ctl__ctl_request__free_unpacked(req, NULL);
}

NODE_TEST(wire, write_to_closed_peer_is_epipe_not_sigpipe)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;

	close(sp[1]);
	sp[1] = -1;
	errno = 0;
	cr_assert_eq(hk_wire_send_request(sp[0], &req), HK_WIRE_IO);
	cr_assert_eq(errno, EPIPE);
}

NODE_TEST(wire, receive_timeout)
{
	struct timeval tv = {0, 100 * 1000};
	uint8_t *buf;
	size_t len;

	cr_assert_eq(setsockopt(sp[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	/* Silence before a frame: an I/O error with EAGAIN (an idle peer). */
	cr_assert_eq(hk_wire_read_frame(sp[1], HK_CTL_MAX_FRAME, &buf, &len), HK_WIRE_IO);
	cr_assert(errno == EAGAIN || errno == EWOULDBLOCK);
	/* Silence inside a frame: truncated. */
	put_len(sp[0], 10);
	put_raw(sp[0], "abc", 3);
	cr_assert_eq(hk_wire_read_frame(sp[1], HK_CTL_MAX_FRAME, &buf, &len), HK_WIRE_TRUNCATED);
}

/* ---- short reads and EINTR ------------------------------------------------ */

static volatile sig_atomic_t interrupts;

static void on_usr1(int sig)
{
	(void)sig;
	interrupts++;
}

struct dribble {
	int fd;
	pthread_t reader;
	uint8_t frame[64];
	size_t len;
};

/* Write a frame a byte at a time, poking the reader with a signal between
 * bytes so its read(2) keeps returning EINTR or short counts. */
static void *dribble_writer(void *arg)
{
	struct dribble *d = arg;
	struct timespec ts = {0, 2 * 1000 * 1000};

	for (size_t i = 0; i < d->len; i++) {
		nanosleep(&ts, NULL);
		pthread_kill(d->reader, SIGUSR1);
		nanosleep(&ts, NULL);
		if (write(d->fd, d->frame + i, 1) != 1)
			break;
	}
	return NULL;
}

NODE_TEST(wire, short_reads_and_eintr)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT, *got;
	Hk__Ctl__GuestWaitRequest wait = HK__CTL__GUEST_WAIT_REQUEST__INIT;
	struct sigaction sa = {.sa_handler = on_usr1}; /* no SA_RESTART */
	struct dribble d = {.fd = sp[0], .reader = pthread_self()};
	pthread_t t;
	size_t body;

	cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
	req.version = HK_CTL_VERSION;
	req.req_case = HK__CTL__CTL_REQUEST__REQ_GUEST_WAIT;
	req.guest_wait = &wait;
	wait.timeout_ms = 123456;
	body = hk__ctl__ctl_request__pack(&req, d.frame + 4);
	d.frame[3] = (uint8_t)body;
	d.len = body + 4;

	cr_assert_eq(pthread_create(&t, NULL, dribble_writer, &d), 0);
	cr_assert_eq(hk_wire_recv_request(sp[1], &got), HK_WIRE_OK);
	pthread_join(t, NULL);
	cr_assert_gt(interrupts, 0);
	cr_assert_eq(got->req_case, HK__CTL__CTL_REQUEST__REQ_GUEST_WAIT);
	cr_assert_eq(got->guest_wait->timeout_ms, 123456);
	hk__ctl__ctl_request__free_unpacked(got, NULL);
}

NODE_TEST(wire, strerror)
{
	cr_assert_str_eq(hk_wire_strerror(HK_WIRE_TOO_BIG), "frame too big");
	cr_assert_str_eq(hk_wire_strerror(HK_WIRE_TRUNCATED), "truncated frame");
	cr_assert_str_eq(hk_wire_strerror(-99), "unknown error");
}
