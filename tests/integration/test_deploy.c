/*
 * deploy/kvm-node.sh, which deploy/install-deps.sh runs before it decides
 * whether the QEMU fallback is needed: a kernel that has KVM but no
 * /dev/kvm node gets one with the MAJOR:MINOR the kernel publishes.  The
 * sysfs file and the node are temporary files here (HK_KVM_SYSFS), so this
 * runs on any host; making a device node needs root.
 */
#include <criterion/criterion.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "hk_test.h"

static char script[4096], dir[64], sysfs[128], node[128];

static void setup(void)
{
	const char *src = getenv("HK_SOURCE_ROOT");

	cr_assert_not_null(src, "HK_SOURCE_ROOT not set by meson");
	snprintf(script, sizeof(script), "%s/deploy/kvm-node.sh", src);
	snprintf(dir, sizeof(dir), "/tmp/hk-deploy-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(sysfs, sizeof(sysfs), "%s/dev", dir);
	snprintf(node, sizeof(node), "%s/kvm", dir);
	setenv("HK_KVM_SYSFS", sysfs, 1);
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd))
		fprintf(stderr, "cannot remove %s\n", dir);
}

TestSuite(deploy, .init = setup, .fini = teardown);

static void write_sysfs(const char *text)
{
	FILE *f = fopen(sysfs, "w");

	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
}

static void kvm_node(struct hk_proc_result *r)
{
	char *argv[] = {"/bin/bash", script, node, NULL};

	hk_run_checked(argv, 30, r);
}

Test(deploy, kvm_node_takes_major_minor_from_sysfs)
{
	struct hk_proc_result r = {0};
	struct group *kvm = getgrnam("kvm");
	struct stat st;

	if (geteuid() != 0)
		cr_skip_test("mknod needs root");
	/* not 10:232: the numbers must come from the file */
	write_sysfs("10:200\n");
	kvm_node(&r);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_eq(stat(node, &st), 0, "%s was not made: %s", node, r.err);
	cr_assert(S_ISCHR(st.st_mode), "%s: mode %o", node, st.st_mode);
	cr_assert_eq(major(st.st_rdev), 10);
	cr_assert_eq(minor(st.st_rdev), 200);
	cr_assert_eq(st.st_mode & 07777, 0660, "mode %o", st.st_mode & 07777);
	if (kvm)
		cr_assert_eq(st.st_gid, kvm->gr_gid, "group %u, want kvm", st.st_gid);
	cr_assert(strstr(r.out, "created"), "%s", r.out);

	/* there already: nothing to do, nothing said */
	kvm_node(&r);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_str_eq(r.out, "");
	hk_proc_result_free(&r);
}

Test(deploy, kvm_node_without_kvm_in_the_kernel_does_nothing)
{
	struct hk_proc_result r = {0};

	kvm_node(&r); /* no sysfs file: no KVM, the QEMU fallback decides */
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_eq(access(node, F_OK), -1, "%s made without KVM", node);
	cr_assert_str_eq(r.err, "");
	hk_proc_result_free(&r);
}

Test(deploy, kvm_node_refuses_a_bad_sysfs_file_or_a_node_in_the_way)
{
	struct hk_proc_result r = {0};
	FILE *f;

	write_sysfs("kvm\n");
	kvm_node(&r);
	cr_assert_eq(r.status, 1);
	cr_assert(strstr(r.err, sysfs) && strstr(r.err, "MAJOR:MINOR"), "%s", r.err);
	cr_assert_eq(hk_lines(r.err), 1, "%s", r.err);
	cr_assert_eq(access(node, F_OK), -1);

	write_sysfs("10:232\n");
	f = fopen(node, "w"); /* a plain file where the node goes */
	cr_assert_not_null(f);
	fclose(f);
	kvm_node(&r);
	cr_assert_eq(r.status, 1);
	cr_assert(strstr(r.err, "not a character device"), "%s", r.err);
	cr_assert_eq(hk_lines(r.err), 1, "%s", r.err);
	hk_proc_result_free(&r);
}
