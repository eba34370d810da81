/*
 * The guest console as the daemon keeps it: the last HK_CONSOLE_KEEP bytes
 * of an unbounded stream, addressed by absolute stream offset so a client
 * can follow it (`hkctl guest console`) without re-reading what it has.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"

void hk_console_init(struct hk_console *c)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->lock, NULL);
}

void hk_console_reset(struct hk_console *c)
{
	pthread_mutex_lock(&c->lock);
	c->total = 0;
	pthread_mutex_unlock(&c->lock);
}

void hk_console_append(struct hk_console *c, const char *buf, size_t len)
{
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < len; i++)
		c->ring[(c->total + i) % HK_CONSOLE_KEEP] = buf[i];
	c->total += len;
	pthread_mutex_unlock(&c->lock);
}

size_t hk_console_read(struct hk_console *c, uint64_t offset, size_t max, uint8_t **out,
		       uint64_t *start, uint64_t *total)
{
	uint64_t first, n;

	pthread_mutex_lock(&c->lock);
	first = c->total > HK_CONSOLE_KEEP ? c->total - HK_CONSOLE_KEEP : 0;
	if (offset > first)
		first = offset < c->total ? offset : c->total;
	n = c->total - first;
	if (n > max)
		n = max;
	*out = malloc(n ? n : 1);
	if (!*out)
		n = 0;
	for (uint64_t i = 0; i < n; i++)
		(*out)[i] = c->ring[(first + i) % HK_CONSOLE_KEEP];
	*start = first;
	*total = c->total;
	pthread_mutex_unlock(&c->lock);
	return n;
}

uint64_t hk_console_total(struct hk_console *c)
{
	uint64_t t;

	pthread_mutex_lock(&c->lock);
	t = c->total;
	pthread_mutex_unlock(&c->lock);
	return t;
}

/*
 * Scans back from the end, at most LAST_LINE_SCAN bytes: a guest that
 * printed a megabyte without a newline gets its last bytes, not a stall
 * under the console lock.
 */
#define LAST_LINE_SCAN 4096u

void hk_console_last_line(struct hk_console *c, char *buf, size_t len)
{
	uint64_t first, end, start;
	size_t n = 0;

	if (!len)
		return;
	pthread_mutex_lock(&c->lock);
	first = c->total > HK_CONSOLE_KEEP ? c->total - HK_CONSOLE_KEEP : 0;
	if (c->total - first > LAST_LINE_SCAN)
		first = c->total - LAST_LINE_SCAN;
	end = c->total;
	while (end > first && (c->ring[(end - 1) % HK_CONSOLE_KEEP] == '\n' ||
			       c->ring[(end - 1) % HK_CONSOLE_KEEP] == '\r'))
		end--;
	start = end;
	while (start > first && c->ring[(start - 1) % HK_CONSOLE_KEEP] != '\n')
		start--;
	for (uint64_t i = start; i < end && n + 1 < len; i++) {
		unsigned char ch = (unsigned char)c->ring[i % HK_CONSOLE_KEEP];

		buf[n++] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
	}
	buf[n] = '\0';
	pthread_mutex_unlock(&c->lock);
}
