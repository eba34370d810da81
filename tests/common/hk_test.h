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

/*
 * Run argv (argv[0] a path, or a name looked up in PATH), wait up to
 * timeout_s, capture both streams. The child dies with this process
 * (PR_SET_PDEATHSIG): a killed test leaves nothing behind.
 */
int hk_run(char *const argv[], int timeout_s, struct hk_proc_result *r);
void hk_proc_result_free(struct hk_proc_result *r);

/*
 * n (<= HK_FREE_PORTS_MAX) consecutive TCP ports on 127.0.0.1 that are free
 * now and that no other test process gets while this one lives (a block
 * held by an flock, below the ephemeral range: hk_ports.c); 0 or -errno.
 * Later calls give further ports.
 */
#define HK_FREE_PORTS_MAX 16
int hk_free_ports(unsigned n, int *ports);
/* hk_free_ports(n) as HK_PORT_BASE for deploy/cluster.sh (node i: base + i). */
int hk_port_base_env(unsigned n);
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
/* The line of s starting with prefix, copied without its newline; "" if none. */
const char *hk_line_with(const char *s, const char *prefix, char *buf, size_t size);
/* Is prog an executable file in one of $PATH's directories? */
bool hk_in_path(const char *prog);
/* Does this kernel's KVM offer KVM_GET_STATS_FD?  false without /dev/kvm. */
bool hk_kvm_has_stats(void);

/*
 * One hkd under test, node n1 of a config the test writes to conf, in a
 * fresh directory that cleanup removes.
 */
struct hk_daemon_fixture {
	char hkd[4096], hkctl[4096]; /* $HK_BUILD_ROOT/node/{hkd,hkctl} */
	char dir[64];                /* /tmp/hk-TAG-XXXXXX */
	char conf[128];              /* DIR/hk.conf */
	char sock[100];              /* DIR/n1.sock, the control socket */
	char log[128];               /* DIR/n1.log, hkd's stdout and stderr */
	pid_t pid;                   /* the running hkd, or 0 */
};

/* Fill in the paths and create dir; false (errno set) if it cannot. */
bool hk_fixture_init(struct hk_daemon_fixture *fx, const char *tag);
/* The pid in a pid file (deploy/cluster.sh writes DIR/NODE.pid), 0 if none. */
pid_t hk_read_pid(const char *path);

/* Spawn hkd --config conf --node n1; false (and no hkd) if sock does not open in
 * 20 s, or at once if hkd exits first. */
bool hk_fixture_start(struct hk_daemon_fixture *fx);
/* Stop hkd (SIGTERM, SIGKILL after 10 s); its exit status, -1 if none was running. */
int hk_fixture_stop(struct hk_daemon_fixture *fx);
/* Stop hkd and remove dir; safe to call twice. */
void hk_fixture_cleanup(struct hk_daemon_fixture *fx);

/*
 * Helpers that report through Criterion, for test files that include
 * <criterion/criterion.h> before this header (hk_test.c does not).
 */
#ifdef CRITERION_H_
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Skip the calling test unless prog is in PATH. */
static inline void hk_need_prog(const char *prog)
{
	if (!hk_in_path(prog))
		cr_skip_test("%s not installed", prog);
}

/* The file $var names (tests/integration/meson.build sets it); fails the test if unreadable. */
static inline const char *hk_env_file(const char *var)
{
	const char *p = getenv(var);

	cr_assert(p && *p, "%s is not set (tests/integration/meson.build sets it)", var);
	cr_assert(access(p, R_OK) == 0, "%s=%s: %s", var, p, strerror(errno));
	return p;
}

/*
 * hk_run for a test: replaces what r held, copies the child's stderr to
 * ours, and fails the test if argv[0] could not be run or was killed
 * after timeout_s.
 */
static inline void hk_run_checked(char *const argv[], int timeout_s, struct hk_proc_result *r)
{
	hk_proc_result_free(r);
	cr_assert(hk_run(argv, timeout_s, r) == 0, "cannot run %s: %s", argv[0], strerror(errno));
	fputs(r->err, stderr);
	cr_assert(!r->timed_out, "%s timed out after %d s; output:\n%s", argv[0], timeout_s,
		  r->out);
}

/*
 * Unless available() (e.g. hk_kvm_available) says yes, tear fx down and
 * skip the calling test: Criterion runs no .fini after a skip, so the
 * daemon must be stopped here.
 */
static inline void hk_fixture_skip_unless(struct hk_daemon_fixture *fx,
					  bool (*available)(char *why, size_t len),
					  const char *what)
{
	char why[256];

	if (!available(why, sizeof(why))) {
		hk_fixture_cleanup(fx);
		cr_skip_test("needs %s: %s", what, why);
	}
}
#endif

#endif
