/*
 * Leak checking (and two small helpers) for the node/ Criterion suites.
 *
 * Criterion 2.4 ignores what LeakSanitizer prints when a test's worker
 * process exits, and only warns about a failed assertion or a crash in a
 * suite's .fini; a leak would pass CI.  So each test runs its body, then
 * NODE_TEST_AFTER() (the file's own clean-up, e.g. stopping a server, so
 * its threads are joined and freed), then asks LeakSanitizer directly.
 * Without ASan the weak symbol is NULL and the check is skipped.
 */
#ifndef NODE_TEST_H
#define NODE_TEST_H

#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

extern int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

static inline void node_assert_no_leaks(void)
{
	if (__lsan_do_recoverable_leak_check)
		cr_assert_eq(__lsan_do_recoverable_leak_check(), 0,
			     "LeakSanitizer found leaks (report above)");
}

static inline uint64_t node_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A TCP port on loopback nobody listens on now (the kernel picks it). */
static inline unsigned node_free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

#ifndef NODE_TEST_AFTER
#define NODE_TEST_AFTER() ((void)0)
#endif

/* Test(suite, name) followed by a leak check; same body syntax. */
#define NODE_TEST(suite, name)                                                                     \
	static void suite##_##name##_body(void);                                                   \
	Test(suite, name)                                                                          \
	{                                                                                          \
		suite##_##name##_body();                                                           \
		NODE_TEST_AFTER();                                                                 \
		node_assert_no_leaks();                                                            \
	}                                                                                          \
	static void suite##_##name##_body(void)

#endif
