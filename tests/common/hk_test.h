/* Helpers shared by the integration tests: run real binaries, read files. */
#ifndef HK_TEST_H
#define HK_TEST_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct hk_proc_result {
	int status;     /* exit status, or 128 + signal */
	bool timed_out; /* killed after the timeout */
	char *out;      /* stdout, NUL-terminated, malloc'd */
	char *err;      /* stderr */
	long maxrss_kb; /* peak resident set of the child */
};

/* Run argv (argv[0] a path), wait up to timeout_s, capture both streams. */
int hk_run(char *const argv[], int timeout_s, struct hk_proc_result *r);
void hk_proc_result_free(struct hk_proc_result *r);

/* Start a long-lived child with stdout/stderr going to log_path. */
pid_t hk_spawn(char *const argv[], const char *log_path);
/* SIGTERM, then SIGKILL after grace_s; returns exit status or 128+sig. */
int hk_stop(pid_t pid, int grace_s);
/* Poll until path exists as a socket that accepts connections. */
bool hk_wait_socket(const char *path, int timeout_s);

/* Path of a build artefact: $HK_BUILD_ROOT/rel. Static buffer per call site. */
const char *hk_build_path(const char *rel, char *buf, size_t len);
/* Write data to a fresh file under /tmp; returns its malloc'd path. */
char *hk_write_temp(const char *tag, const void *data, size_t len);
/* Count non-overlapping occurrences of needle. */
int hk_count(const char *hay, const char *needle);
/* Number of newline-terminated lines. */
int hk_lines(const char *s);

#endif
