/*
 * hkd's control socket: a Unix stream socket, one accept thread, one
 * joinable worker thread per connection (at most HK_CTL_MAX_CONNS).
 *
 * Every byte from a client is untrusted: a bad frame (too big, truncated,
 * not a CtlRequest) gets a one-line error reply if the socket still takes
 * it, one line on stderr, and that connection is closed; the others carry
 * on.  Per-connection send and receive timeouts keep a stalled client from
 * pinning its thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "node.h"

struct ctl_conn {
	struct hk_ctl_server *srv;
	struct ctl_conn *next;
	pthread_t thread;
	int fd;	   /* -1 once the worker has closed it; guarded by srv->lock */
	bool done; /* worker finished; the accept thread may join it */
};

struct hk_ctl_server {
	struct hk_ctl_ops ops;
	void *ctx;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	dev_t dev; /* identity of the socket file we bound, so stop only */
	ino_t ino; /* unlinks ours */
	int lfd;
	int wake[2]; /* stop writes wake[1] to end the accept thread's poll */
	pthread_t acceptor;

	pthread_mutex_t lock;
	struct ctl_conn *conns; /* live and finished-but-unjoined workers */
	unsigned n_live;
	bool stopping;
};

__attribute__((format(printf, 1, 2))) static void ctl_log(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	/* One write(2) per line so lines from several threads do not mix. */
	n = snprintf(line, sizeof(line), "%s: control: ", program_invocation_short_name);
	if (n < 0 || (size_t)n >= sizeof(line) - 1)
		return;
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	n = (int)strlen(line);
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return; /* nowhere left to say it */
}

static bool ctl_stopping(struct hk_ctl_server *srv)
{
	bool stopping;

	pthread_mutex_lock(&srv->lock);
	stopping = srv->stopping;
	pthread_mutex_unlock(&srv->lock);
	return stopping;
}

/* Best effort: the peer may be gone, and that is fine. */
__attribute__((format(printf, 2, 3))) static void ctl_reply_error(int fd, const char *fmt, ...)
{
	Hk__Ctl__CtlResponse rsp = HK__CTL__CTL_RESPONSE__INIT;
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	rsp.error = msg;
	hk_wire_send_response(fd, &rsp);
}

static void ctl_set_timeouts(int fd)
{
	struct timeval tv = {
	    .tv_sec = HK_CTL_IO_TIMEOUT_MS / 1000,
	    .tv_usec = (HK_CTL_IO_TIMEOUT_MS % 1000) * 1000,
	};

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* protobuf-c leaves req_case unset for a oneof member it does not know
 * (a newer client), so "set" is "known" without a second list to keep. */
static bool ctl_req_known(const Hk__Ctl__CtlRequest *req)
{
	return req->req_case != HK__CTL__CTL_REQUEST__REQ__NOT_SET;
}

/* Answer one well-formed request; false if the connection should end. */
static bool ctl_serve_request(struct hk_ctl_server *srv, int fd, const Hk__Ctl__CtlRequest *req)
{
	Hk__Ctl__CtlResponse rsp = HK__CTL__CTL_RESPONSE__INIT;
	int ret;

	if (req->version != HK_CTL_VERSION) {
		ctl_reply_error(fd, "control: unsupported protocol version %u (hkd speaks %u)",
				req->version, HK_CTL_VERSION);
		return true;
	}
	if (!ctl_req_known(req)) {
		ctl_reply_error(fd, "control: empty or unknown request (hkd speaks version %u)",
				HK_CTL_VERSION);
		return true;
	}
	srv->ops.handle(srv->ctx, req, &rsp);
	ret = hk_wire_send_response(fd, &rsp);
	if (ret == HK_WIRE_TOO_BIG) {
		size_t len = protobuf_c_message_get_packed_size(&rsp.base);

		ctl_log("reply of %zu bytes exceeds limit %u", len, HK_CTL_MAX_FRAME);
		ctl_reply_error(fd, "control: reply of %zu bytes exceeds limit %u", len,
				HK_CTL_MAX_FRAME);
		ret = HK_WIRE_OK;
	}
	if (srv->ops.rsp_free)
		srv->ops.rsp_free(srv->ctx, &rsp);
	if (ret != HK_WIRE_OK) {
		if (ctl_stopping(srv))
			return false;
		ctl_log("cannot send reply: %s%s%s", hk_wire_strerror(ret),
			ret == HK_WIRE_IO ? ": " : "", ret == HK_WIRE_IO ? strerror(errno) : "");
		return false;
	}
	return true;
}

/* Read frames until the peer closes or misbehaves. */
static void ctl_serve(struct hk_ctl_server *srv, int fd)
{
	for (;;) {
		Hk__Ctl__CtlRequest *req;
		uint8_t *buf;
		size_t len;
		bool keep;
		int ret;

		ret = hk_wire_read_frame(fd, HK_CTL_MAX_FRAME, &buf, &len);
		switch (ret) {
		case HK_WIRE_OK:
			break;
		case HK_WIRE_EOF:
			return;
		case HK_WIRE_TOO_BIG:
			ctl_log("frame of %zu bytes exceeds limit %u; closing connection", len,
				HK_CTL_MAX_FRAME);
			ctl_reply_error(fd, "control: frame of %zu bytes exceeds limit %u", len,
					HK_CTL_MAX_FRAME);
			return;
		case HK_WIRE_TRUNCATED:
			if (ctl_stopping(srv))
				return; /* our own shutdown(2) cut the frame */
			ctl_log("truncated frame (peer closed or silent for %d ms); closing "
				"connection",
				HK_CTL_IO_TIMEOUT_MS);
			ctl_reply_error(fd, "control: truncated frame (silent for %d ms or closed)",
					HK_CTL_IO_TIMEOUT_MS);
			return;
		default:
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return; /* idle for HK_CTL_IO_TIMEOUT_MS between requests */
			/* After stop's shutdown(2) reads see EOF, so this is real. */
			ctl_log("read error: %s; closing connection", strerror(errno));
			return;
		}

		req = hk__ctl__ctl_request__unpack(NULL, len, buf ? buf : (const uint8_t *)"");
		free(buf);
		if (!req) {
			ctl_log("malformed request (%zu bytes); closing connection", len);
			ctl_reply_error(fd, "control: malformed request of %zu bytes", len);
			return;
		}
		keep = ctl_serve_request(srv, fd, req);
		hk__ctl__ctl_request__free_unpacked(req, NULL);
		if (!keep)
			return;
	}
}

static void *ctl_worker(void *arg)
{
	struct ctl_conn *c = arg;
	struct hk_ctl_server *srv = c->srv;
	int fd = c->fd; /* only this thread closes it, so reading it unlocked is fine */

	ctl_serve(srv, fd);

	/* Retire the fd under the lock: stop's shutdown() must never hit an fd
	 * number that accept() has already handed out again. */
	pthread_mutex_lock(&srv->lock);
	c->fd = -1;
	c->done = true;
	srv->n_live--;
	pthread_mutex_unlock(&srv->lock);
	close(fd);
	return NULL;
}

/* Join workers that have finished.  O(connections), on the accept thread. */
static void ctl_reap(struct hk_ctl_server *srv)
{
	struct ctl_conn **pp, *done = NULL, *c;

	pthread_mutex_lock(&srv->lock);
	for (pp = &srv->conns; (c = *pp);) {
		if (c->done) {
			*pp = c->next;
			c->next = done;
			done = c;
		} else {
			pp = &c->next;
		}
	}
	pthread_mutex_unlock(&srv->lock);
	while ((c = done)) {
		done = c->next;
		pthread_join(c->thread, NULL);
		free(c);
	}
}

static void ctl_accept_one(struct hk_ctl_server *srv)
{
	struct ctl_conn *c;
	int fd, ret;

	fd = accept4(srv->lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			/* Let connections drain rather than spin on a full table. */
			struct timespec ts = {0, 100 * 1000 * 1000};

			ctl_log("accept: %s", strerror(errno));
			nanosleep(&ts, NULL);
		}
		return; /* EAGAIN, EINTR, ECONNABORTED: nothing to do */
	}
	ctl_set_timeouts(fd);

	pthread_mutex_lock(&srv->lock);
	if (srv->n_live >= HK_CTL_MAX_CONNS) {
		pthread_mutex_unlock(&srv->lock);
		ctl_log("%d connections already open; refusing one", HK_CTL_MAX_CONNS);
		ctl_reply_error(fd, "control: too many connections (%d); try again",
				HK_CTL_MAX_CONNS);
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		pthread_mutex_unlock(&srv->lock);
		ctl_reply_error(fd, "control: out of memory");
		close(fd);
		return;
	}
	c->srv = srv;
	c->fd = fd;
	ret = pthread_create(&c->thread, NULL, ctl_worker, c);
	if (ret) {
		pthread_mutex_unlock(&srv->lock);
		ctl_log("cannot start a connection thread: %s", strerror(ret));
		ctl_reply_error(fd, "control: cannot start a thread: %s", strerror(ret));
		close(fd);
		free(c);
		return;
	}
	c->next = srv->conns;
	srv->conns = c;
	srv->n_live++;
	pthread_mutex_unlock(&srv->lock);
}

static void *ctl_acceptor(void *arg)
{
	struct hk_ctl_server *srv = arg;
	struct pollfd pfd[2] = {
	    {.fd = srv->lfd, .events = POLLIN},
	    {.fd = srv->wake[0], .events = POLLIN},
	};

	for (;;) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			ctl_log("poll: %s", strerror(errno));
			break;
		}
		if (pfd[1].revents)
			break;
		if (pfd[0].revents & POLLIN)
			ctl_accept_one(srv);
		ctl_reap(srv);
	}
	return NULL;
}

/*
 * Is someone listening on path?  Non-blocking so a live daemon with a full
 * backlog (EAGAIN) counts as live instead of hanging us.
 */
static int ctl_probe(const struct sockaddr_un *sa)
{
	int fd, ret = 0;

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0 || errno == EAGAIN ||
	    errno == EINPROGRESS)
		ret = -EADDRINUSE;
	else if (errno == ECONNREFUSED || errno == ENOENT)
		ret = 0; /* stale file, or gone already */
	else
		ret = -errno;
	close(fd);
	return ret;
}

static int ctl_bind(struct hk_ctl_server *srv)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int fd, ret;

	memcpy(sa.sun_path, srv->path, strlen(srv->path) + 1);

	if (lstat(srv->path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return -EEXIST; /* not ours to delete */
		ret = ctl_probe(&sa);
		if (ret)
			return ret;
		if (unlink(srv->path) && errno != ENOENT)
			return -errno;
	} else if (errno != ENOENT) {
		return -errno;
	}

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* Linux creates the socket file with the socket inode's mode (minus
	 * umask), so it is never more open than 0600, even for an instant; the
	 * chmod after bind covers umask and other systems.  No umask() here:
	 * it is process-wide and other threads may be creating files. */
	if (fchmod(fd, 0600) < 0 && errno != EINVAL)
		goto fail_errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto fail_errno;
	if (chmod(srv->path, 0600) < 0 || stat(srv->path, &st) < 0)
		goto fail_unlink;
	srv->dev = st.st_dev;
	srv->ino = st.st_ino;
	if (listen(fd, 64) < 0)
		goto fail_unlink;
	srv->lfd = fd;
	return 0;

fail_unlink:
	ret = -errno;
	unlink(srv->path);
	close(fd);
	return ret;
fail_errno:
	ret = -errno;
	close(fd);
	return ret;
}

int hk_ctl_server_start(const char *path, const struct hk_ctl_ops *ops, void *ctx,
			struct hk_ctl_server **out)
{
	struct hk_ctl_server *srv;
	int ret;

	*out = NULL;
	if (!ops || !ops->handle || ops->size < offsetof(struct hk_ctl_ops, shutdown))
		return -EINVAL;
	if (strlen(path) >= sizeof(srv->path))
		return -ENAMETOOLONG;
	if (!path[0])
		return -EINVAL;

	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return -ENOMEM;
	/* A caller built against an older, shorter table gets NULLs for the rest. */
	memcpy(&srv->ops, ops, ops->size < sizeof(srv->ops) ? ops->size : sizeof(srv->ops));
	srv->ctx = ctx;
	snprintf(srv->path, sizeof(srv->path), "%s", path);
	srv->lfd = -1;
	srv->wake[0] = srv->wake[1] = -1;
	pthread_mutex_init(&srv->lock, NULL);

	if (pipe2(srv->wake, O_CLOEXEC) < 0) {
		ret = -errno;
		goto fail;
	}
	ret = ctl_bind(srv);
	if (ret)
		goto fail;
	ret = pthread_create(&srv->acceptor, NULL, ctl_acceptor, srv);
	if (ret) {
		ret = -ret;
		unlink(srv->path);
		goto fail;
	}
	*out = srv;
	return 0;

fail:
	if (srv->lfd >= 0)
		close(srv->lfd);
	if (srv->wake[0] >= 0) {
		close(srv->wake[0]);
		close(srv->wake[1]);
	}
	pthread_mutex_destroy(&srv->lock);
	free(srv);
	return ret;
}

void hk_ctl_server_stop(struct hk_ctl_server *srv)
{
	struct ctl_conn *c;
	struct stat st;
	char b = 1;

	if (!srv)
		return;

	/* 1. No new connections: end the accept thread, drop the listener. */
	while (write(srv->wake[1], &b, 1) < 0 && errno == EINTR)
		;
	pthread_join(srv->acceptor, NULL);
	if (stat(srv->path, &st) == 0 && st.st_dev == srv->dev && st.st_ino == srv->ino)
		unlink(srv->path);
	close(srv->lfd);

	/* 2. Wake workers blocked reading or writing: they see EOF / EPIPE. */
	pthread_mutex_lock(&srv->lock);
	srv->stopping = true;
	for (c = srv->conns; c; c = c->next)
		if (c->fd >= 0)
			shutdown(c->fd, SHUT_RDWR);
	pthread_mutex_unlock(&srv->lock);

	/* 3. Wake workers blocked in the daemon's handler. */
	if (srv->ops.shutdown)
		srv->ops.shutdown(srv->ctx);

	/* 4. Join everyone; no thread adds to the list any more. */
	while ((c = srv->conns)) {
		srv->conns = c->next;
		pthread_join(c->thread, NULL);
		free(c);
	}
	close(srv->wake[0]);
	close(srv->wake[1]);
	pthread_mutex_destroy(&srv->lock);
	free(srv);
}
