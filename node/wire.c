/*
 * Control protocol framing, version 1 (proto/ctl.proto):
 *
 *   +----------------------+---------------------------------+
 *   | length, u32 big-end. | protobuf-c CtlRequest/Response  |
 *   +----------------------+---------------------------------+
 *
 * The length is checked against the caller's limit before a byte of the
 * body is allocated or read, so a hostile 4-byte prefix costs nothing.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "node.h"

const char *hk_wire_strerror(int err)
{
	switch (err) {
	case HK_WIRE_OK:
		return "ok";
	case HK_WIRE_EOF:
		return "connection closed";
	case HK_WIRE_TRUNCATED:
		return "truncated frame";
	case HK_WIRE_TOO_BIG:
		return "frame too big";
	case HK_WIRE_GARBAGE:
		return "malformed message";
	case HK_WIRE_IO:
		return "I/O error";
	default:
		return "unknown error";
	}
}

/*
 * Read exactly len bytes.  *got says how many arrived, so the caller can
 * tell a clean EOF (nothing) from a truncated frame (some).
 */
static int wire_read_full(int fd, uint8_t *p, size_t len, size_t *got)
{
	*got = 0;
	while (*got < len) {
		ssize_t n = read(fd, p + *got, len - *got);

		if (n > 0) {
			*got += (size_t)n;
			continue;
		}
		if (n == 0)
			return HK_WIRE_EOF;
		if (errno == EINTR)
			continue;
		if (errno == ECONNRESET)
			return HK_WIRE_EOF;
		return HK_WIRE_IO; /* EAGAIN here is an SO_RCVTIMEO timeout */
	}
	return HK_WIRE_OK;
}

int hk_wire_read_frame(int fd, size_t max, uint8_t **buf, size_t *len)
{
	uint8_t hdr[4];
	uint32_t n;
	size_t got;
	uint8_t *body;
	int ret;

	*buf = NULL;
	*len = 0;
	ret = wire_read_full(fd, hdr, sizeof(hdr), &got);
	if (ret != HK_WIRE_OK)
		return got ? HK_WIRE_TRUNCATED : ret;

	n = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
	if (n > max) {
		*len = n;
		return HK_WIRE_TOO_BIG;
	}
	if (n == 0)
		return HK_WIRE_OK;

	body = malloc(n);
	if (!body) {
		errno = ENOMEM;
		return HK_WIRE_IO;
	}
	ret = wire_read_full(fd, body, n, &got);
	if (ret != HK_WIRE_OK) {
		int saved = errno;

		free(body);
		errno = saved;
		/* EOF, reset or timeout after the prefix all leave half a frame. */
		return (ret == HK_WIRE_IO && errno != EAGAIN && errno != EWOULDBLOCK)
			   ? HK_WIRE_IO
			   : HK_WIRE_TRUNCATED;
	}
	*buf = body;
	*len = n;
	return HK_WIRE_OK;
}

int hk_wire_write_frame(int fd, const uint8_t *buf, size_t len)
{
	uint8_t hdr[4];
	struct iovec iov[2];
	struct msghdr msg;
	size_t left = sizeof(hdr) + len;
	int use_write = 0;

	if (len > HK_CTL_MAX_FRAME)
		return HK_WIRE_TOO_BIG;
	hdr[0] = (uint8_t)(len >> 24);
	hdr[1] = (uint8_t)(len >> 16);
	hdr[2] = (uint8_t)(len >> 8);
	hdr[3] = (uint8_t)len;
	iov[0].iov_base = hdr;
	iov[0].iov_len = sizeof(hdr);
	iov[1].iov_base = (void *)buf;
	iov[1].iov_len = len;
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = iov;
	msg.msg_iovlen = len ? 2 : 1;

	/* One syscall for prefix and body in the common case; loop on short
	 * writes by advancing the iovec. */
	while (left) {
		ssize_t n;

		if (use_write)
			n = writev(fd, msg.msg_iov, (int)msg.msg_iovlen);
		else
			n = sendmsg(fd, &msg, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ENOTSOCK && !use_write) {
				use_write = 1; /* a pipe in a test; caller owns SIGPIPE */
				continue;
			}
			return HK_WIRE_IO;
		}
		left -= (size_t)n;
		while (n > 0) {
			size_t step =
			    (size_t)n < msg.msg_iov->iov_len ? (size_t)n : msg.msg_iov->iov_len;

			msg.msg_iov->iov_base = (uint8_t *)msg.msg_iov->iov_base + step;
			msg.msg_iov->iov_len -= step;
			n -= (ssize_t)step;
			if (msg.msg_iov->iov_len == 0 && msg.msg_iovlen > 1) {
				msg.msg_iov++;
				msg.msg_iovlen--;
			}
		}
	}
	return HK_WIRE_OK;
}

/* ---- typed messages ------------------------------------------------------ */

static int wire_send_msg(int fd, const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t small[512], *buf = small;
	int ret;

	if (len > HK_CTL_MAX_FRAME)
		return HK_WIRE_TOO_BIG;
	if (len > sizeof(small)) {
		buf = malloc(len);
		if (!buf) {
			errno = ENOMEM;
			return HK_WIRE_IO;
		}
	}
	protobuf_c_message_pack(m, buf);
	ret = hk_wire_write_frame(fd, buf, len);
	if (buf != small)
		free(buf);
	return ret;
}

static int wire_recv_msg(int fd, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out)
{
	static const uint8_t empty[1];
	uint8_t *buf;
	size_t len;
	int ret;

	*out = NULL;
	ret = hk_wire_read_frame(fd, HK_CTL_MAX_FRAME, &buf, &len);
	if (ret != HK_WIRE_OK)
		return ret;
	/* A zero-length frame is a valid message with every field at its
	 * default; protobuf-c wants a non-NULL pointer for it. */
	*out = protobuf_c_message_unpack(desc, NULL, len, buf ? buf : empty);
	free(buf);
	return *out ? HK_WIRE_OK : HK_WIRE_GARBAGE;
}

int hk_wire_send_request(int fd, const Hk__Ctl__CtlRequest *req)
{
	return wire_send_msg(fd, &req->base);
}

int hk_wire_recv_request(int fd, Hk__Ctl__CtlRequest **req)
{
	return wire_recv_msg(fd, &hk__ctl__ctl_request__descriptor, (ProtobufCMessage **)req);
}

int hk_wire_send_response(int fd, const Hk__Ctl__CtlResponse *rsp)
{
	return wire_send_msg(fd, &rsp->base);
}

int hk_wire_recv_response(int fd, Hk__Ctl__CtlResponse **rsp)
{
	return wire_recv_msg(fd, &hk__ctl__ctl_response__descriptor, (ProtobufCMessage **)rsp);
}
