/*
 * hkctl's side of the control socket.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "node.h"

int hk_ctl_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t len = strlen(path);
	int fd, ret;

	if (len == 0)
		return -EINVAL;
	if (len >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, len + 1);

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (errno == EINTR)
			continue; /* Unix connect completes or fails; retry is fine */
		ret = -errno;
		close(fd);
		return ret;
	}
	return fd;
}

int hk_ctl_call(int fd, const Hk__Ctl__CtlRequest *req, Hk__Ctl__CtlResponse **rsp)
{
	int ret, sent;

	*rsp = NULL;
	sent = hk_wire_send_request(fd, req);
	if (sent != HK_WIRE_OK && !(sent == HK_WIRE_IO && (errno == EPIPE || errno == ECONNRESET)))
		return sent;
	/* Even when the send hit EPIPE the daemon may have left a reply saying
	 * why it hung up ("too many connections"); that beats "broken pipe". */
	ret = hk_wire_recv_response(fd, rsp);
	if (ret != HK_WIRE_OK && sent != HK_WIRE_OK) {
		errno = EPIPE;
		return sent;
	}
	return ret;
}
