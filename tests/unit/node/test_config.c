/*
 * hk_config_load: a good hk.conf comes back complete; every bad one is
 * refused with one line that names the file, the line and the key.
 */
#include "node_test.h"
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node.h"

static struct hk_config cfg;
static char err[1024];
static char conf_path[PATH_MAX];

/* Write text to a fresh /tmp file, load it, remove it. */
static int load(const char *text)
{
	char tmpl[] = "/tmp/hk-conf-XXXXXX";
	int fd = mkstemp(tmpl);
	size_t len = strlen(text);
	int ret;

	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, text, len), (ssize_t)len);
	close(fd);
	snprintf(conf_path, sizeof(conf_path), "%s", tmpl);
	memset(err, 'x', sizeof(err));
	err[sizeof(err) - 1] = '\0';
	ret = hk_config_load(tmpl, &cfg, err, sizeof(err));
	unlink(tmpl);
	return ret;
}

/* The load fails with exactly "<file>:<want>", on one line. */
static void load_fails(const char *text, const char *want)
{
	char full[PATH_MAX + 1024];
	int ret = load(text);

	cr_assert_eq(ret, -EINVAL, "load returned %d (%s), want -EINVAL for:\n%s", ret, err, text);
	cr_assert_null(strchr(err, '\n'), "error is not one line: %s", err);
	/* "<file>:<line>: ..." for a line, "<file>: ..." for the whole file */
	snprintf(full, sizeof(full), "%s:%s%s", conf_path,
		 isdigit((unsigned char)want[0]) ? "" : " ", want);
	cr_assert_str_eq(err, full);
}

/* The load fails and the line contains want (for messages with paths). */
static void load_fails_with(const char *text, const char *want)
{
	int ret = load(text);

	cr_assert_eq(ret, -EINVAL, "load returned %d (%s), want -EINVAL", ret, err);
	cr_assert_null(strchr(err, '\n'), "error is not one line: %s", err);
	cr_assert(strncmp(err, conf_path, strlen(conf_path)) == 0,
		  "error does not name the file: %s", err);
	cr_assert_not_null(strstr(err, want), "error '%s' does not contain '%s'", err, want);
}

#define NODE1 "[node n1]\nmemory = 1G\ncontrol = /tmp/n1.sock\n"

NODE_TEST(config, full_file)
{
	int ret = load("; a cluster of two\n"
		       "[cluster]\n"
		       "name = demo\n"
		       "provider = verbs;ofi_rxm\n"
		       "\n"
		       "[guest]\n"
		       "kernel = /boot/guest.elf\n"
		       "cmdline = console=hk quiet\n"
		       "memory = 1.5G\n"
		       "vcpus = 4\n"
		       "\n"
		       "[node n1]\n"
		       "address = 10.0.0.1:7000\n"
		       "memory = 1G\n"
		       "control = /run/hk/n1.sock\n"
		       "\n"
		       "[node n2]\n"
		       "address = 10.0.0.2:7000\n"
		       "memory = 512M\n"
		       "control = /run/hk/n2.sock\n");

	cr_assert_eq(ret, 0, "%s", err);
	cr_assert_str_eq(cfg.path, conf_path);
	cr_assert_str_eq(cfg.cluster_name, "demo");
	cr_assert_str_eq(cfg.provider, "verbs;ofi_rxm");
	cr_assert_str_eq(cfg.kernel, "/boot/guest.elf");
	cr_assert_str_eq(cfg.cmdline, "console=hk quiet");
	cr_assert_eq(cfg.guest_memory, 1610612736ull);
	cr_assert_eq(hk_config_guest_memory(&cfg), 1610612736ull);
	cr_assert_eq(cfg.vcpus, 4);
	cr_assert_eq(cfg.n_nodes, 2);
	cr_assert_str_eq(cfg.nodes[0].name, "n1");
	cr_assert_str_eq(cfg.nodes[0].address, "10.0.0.1:7000");
	cr_assert_eq(cfg.nodes[0].memory, 1ull << 30);
	cr_assert_str_eq(cfg.nodes[0].control, "/run/hk/n1.sock");
	cr_assert_str_eq(cfg.nodes[1].name, "n2");
	cr_assert_eq(cfg.nodes[1].memory, 512ull << 20);
	cr_assert_eq(hk_config_node(&cfg, "n2"), &cfg.nodes[1]);
	cr_assert_null(hk_config_node(&cfg, "n3"));
}

NODE_TEST(config, defaults)
{
	int ret = load("[node a]\nmemory = 64M\ncontrol = /tmp/a.sock\n"
		       "[node b]\nmemory = 32M\ncontrol = /tmp/b.sock\n");

	cr_assert_eq(ret, 0, "%s", err);
	cr_assert_str_eq(cfg.cluster_name, "hyperkernel");
	cr_assert_str_eq(cfg.provider, "tcp;ofi_rxm");
	cr_assert_eq(cfg.policy, HK_POLICY_ADAPTIVE);
	cr_assert_eq(cfg.vcpus, 1);
	cr_assert_eq(cfg.guest_memory, 0);
	cr_assert_eq(hk_config_guest_memory(&cfg), 96ull << 20);
	cr_assert_str_eq(cfg.kernel, "");
	cr_assert_str_eq(cfg.nodes[0].address, "");
	cr_assert(cfg.replicas);
	cr_assert_eq(cfg.n_disks, 0);
	cr_assert_null(hk_config_disk(&cfg, "d0"));
}

NODE_TEST(config, relative_paths_are_from_the_files_folder)
{
	char dir[] = "/tmp/hk-conf-dir-XXXXXX";
	char real[PATH_MAX], path[PATH_MAX + 16], want[PATH_MAX + 32];
	FILE *f;
	int ret;

	cr_assert_not_null(mkdtemp(dir));
	cr_assert_not_null(realpath(dir, real));
	snprintf(path, sizeof(path), "%s/hk.conf", dir);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs("[guest]\nkernel = guest.elf\n[node n1]\nmemory = 1G\ncontrol = ./run/n1.sock\n"
	      "[node n2]\nmemory = 1G\ncontrol = /abs/n2.sock\n",
	      f);
	fclose(f);

	/* Load by a relative name from elsewhere: results are still absolute
	 * and point into the config's folder, not the working directory. */
	cr_assert_eq(chdir(dir), 0);
	ret = hk_config_load("hk.conf", &cfg, err, sizeof(err));
	cr_assert_eq(chdir("/"), 0);
	unlink(path);
	rmdir(dir);

	cr_assert_eq(ret, 0, "%s", err);
	snprintf(want, sizeof(want), "%s/guest.elf", real);
	cr_assert_str_eq(cfg.kernel, want);
	snprintf(want, sizeof(want), "%s/run/n1.sock", real);
	cr_assert_str_eq(cfg.nodes[0].control, want);
	cr_assert_str_eq(cfg.nodes[1].control, "/abs/n2.sock");
}

NODE_TEST(config, comments_blanks_crlf_and_indent)
{
	int ret = load("# comment\r\n"
		       "[guest]   ; trailing comment\r\n"
		       "memory = 1G ; inline comment\r\n"
		       "  vcpus=2\r\n"
		       "[node n1]\r\n"
		       "\tcontrol = /tmp/n1.sock\r\n"
		       "\tmemory = 64M\r\n");

	cr_assert_eq(ret, 0, "%s", err);
	cr_assert_eq(cfg.guest_memory, 1ull << 30);
	cr_assert_eq(cfg.vcpus, 2);
	cr_assert_eq(cfg.nodes[0].memory, 64ull << 20);
	cr_assert_str_eq(cfg.nodes[0].control, "/tmp/n1.sock");
}

NODE_TEST(config, long_values_fit)
{
	char text[4096], cmdline[1001];

	memset(cmdline, 'c', sizeof(cmdline) - 1);
	cmdline[sizeof(cmdline) - 1] = '\0';
	snprintf(text, sizeof(text), "[guest]\ncmdline = %s\n" NODE1, cmdline);
	cr_assert_eq(load(text), 0, "%s", err);
	cr_assert_str_eq(cfg.cmdline, cmdline);
}

NODE_TEST(config, missing_file)
{
	int ret = hk_config_load("/nonexistent/hk.conf", &cfg, err, sizeof(err));

	cr_assert_eq(ret, -ENOENT);
	cr_assert_str_eq(err, "/nonexistent/hk.conf: cannot open: No such file or directory");
}

NODE_TEST(config, bad_size_names_line_section_and_key)
{
	load_fails("[cluster]\n"
		   "name = c\n"
		   "\n"
		   "[node n1]\n"
		   "control = /tmp/n1.sock\n"
		   "\n"
		   "memory = abc\n",
		   "7: [node n1] memory: bad size 'abc'");
	load_fails("[guest]\nmemory = 1.1.1G\n" NODE1, "2: [guest] memory: bad size '1.1.1G'");
	load_fails("[guest]\nmemory = -1G\n" NODE1, "2: [guest] memory: bad size '-1G'");
	load_fails("[guest]\nmemory =\n" NODE1, "2: [guest] memory: bad size ''");
	load_fails("[node n1]\ncontrol = /tmp/n1.sock\nmemory = 99999999999T\n",
		   "3: [node n1] memory: size '99999999999T' is too large");
	load_fails(
	    "[node n1]\ncontrol = /tmp/n1.sock\nmemory = 1000\n",
	    "3: [node n1] memory: 1000 (1000 bytes) is not a multiple of the 4 KiB page size");
}

NODE_TEST(config, unknown_section_and_key)
{
	load_fails("[gust]\nmemory = 1G\n" NODE1,
		   "1: unknown section [gust] (want cluster, guest, node NAME or disk NAME)");
	load_fails(NODE1 "[nodes n2]\n",
		   "4: unknown section [nodes n2] (want cluster, guest, node NAME or disk NAME)");
	load_fails(NODE1 "[disks d0]\n",
		   "4: unknown section [disks d0] (want cluster, guest, node NAME or disk NAME)");
	load_fails(NODE1 "[diskd0]\n",
		   "4: unknown section [diskd0] (want cluster, guest, node NAME or disk NAME)");
	load_fails("[guest]\nmemroy = 1G\n" NODE1, "2: [guest] unknown key 'memroy'");
	load_fails(NODE1 "contrl = x\n", "4: [node n1] unknown key 'contrl'");
	load_fails("[cluster]\nnmae = x\n" NODE1, "2: [cluster] unknown key 'nmae'");
	load_fails("memory = 1G\n" NODE1, "1: key 'memory' before any [section]");
}

NODE_TEST(config, syntax_errors)
{
	load_fails(NODE1 "just words\n", "4: syntax error: want [section] or key = value");
	load_fails("[guest\n" NODE1, "1: syntax error: want [section] or key = value");
	load_fails("[guest] junk\n" NODE1, "1: unexpected text after section header: 'junk'");
}

NODE_TEST(config, nodes)
{
	load_fails("[guest]\nmemory = 1G\n",
		   "no [node NAME] section; at least one node is required");
	load_fails(NODE1 "[node n1]\ncontrol = /tmp/x.sock\n",
		   "4: duplicate [node n1] (first at line 1)");
	load_fails(NODE1 "\n[node n2]\nmemory = 1G\n",
		   "5: [node n2] control: missing (the node's Unix socket path)");
	load_fails(NODE1 "[node n2]\n",
		   "4: [node n2] control: missing (the node's Unix socket path)");
	load_fails("[node]\ncontrol = /tmp/a\n",
		   "1: bad node name '' in [node NAME] (1-63 of A-Z a-z 0-9 . _ -)");
	load_fails("[node a/b]\ncontrol = /tmp/a\n",
		   "1: bad node name 'a/b' in [node NAME] (1-63 of A-Z a-z 0-9 . _ -)");
	load_fails(NODE1 "[node n2]\nmemory = 1G\ncontrol = /tmp/n1.sock\n",
		   "6: [node n2] control: '/tmp/n1.sock' is already used by [node n1]");
	load_fails(
	    "[node n1]\naddress = h:1\ncontrol = /a\n[node n2]\naddress = h:1\ncontrol = /b\n",
	    "5: [node n2] address: 'h:1' is already used by [node n1]");
	load_fails("[node n1]\naddress = nohost\ncontrol = /a\n",
		   "2: [node n1] address: bad address 'nohost' (want host:port)");
	load_fails("[node n1]\naddress = h:99999\ncontrol = /a\n",
		   "2: [node n1] address: bad port in 'h:99999' (want host:port, port 1..65535)");
	load_fails(NODE1 "memory = 2G\n", "4: [node n1] memory: set twice (first at line 2)");
}

NODE_TEST(config, too_many_nodes)
{
	static char text[64 * 1024];
	size_t off = 0;
	int i;

	for (i = 0; i <= HK_MAX_NODES; i++)
		off += (size_t)snprintf(text + off, sizeof(text) - off,
					"[node n%d]\nmemory = 1G\ncontrol = /tmp/n%d.sock\n", i, i);
	load_fails(text, "193: [node n64]: more than 64 nodes");
}

NODE_TEST(config, control_path_must_fit_sun_path)
{
	char text[1024], longp[120];

	memset(longp, 'p', sizeof(longp) - 1);
	longp[0] = '/';
	longp[sizeof(longp) - 1] = '\0';
	snprintf(text, sizeof(text), "[node n1]\nmemory = 1G\ncontrol = %s\n", longp);
	load_fails_with(text, ":3: [node n1] control: path '/ppp");
	load_fails_with(text, "is 119 bytes, the limit is 107 (Unix socket sun_path)");

	/* 107 bytes is the longest that fits. */
	longp[107] = '\0';
	snprintf(text, sizeof(text), "[node n1]\nmemory = 1G\ncontrol = %s\n", longp);
	cr_assert_eq(load(text), 0, "%s", err);
	cr_assert_str_eq(cfg.nodes[0].control, longp);
}

NODE_TEST(config, vcpus)
{
	load_fails("[guest]\nvcpus = 0\n" NODE1, "2: [guest] vcpus: '0' is out of range 1..64");
	load_fails("[guest]\nvcpus = 65\n" NODE1, "2: [guest] vcpus: '65' is out of range 1..64");
	load_fails("[guest]\nvcpus = 99999999999999999999999\n" NODE1,
		   "2: [guest] vcpus: '99999999999999999999999' is out of range 1..64");
	load_fails("[guest]\nvcpus = -1\n" NODE1, "2: [guest] vcpus: bad number '-1'");
	load_fails("[guest]\nvcpus = 2x\n" NODE1, "2: [guest] vcpus: bad number '2x'");
	load_fails("[guest]\nvcpus =\n" NODE1, "2: [guest] vcpus: bad number ''");
	cr_assert_eq(load("[guest]\nvcpus = 64\n" NODE1), 0, "%s", err);
	cr_assert_eq(cfg.vcpus, 64);
}

NODE_TEST(config, guest_memory_minimum)
{
	load_fails("[guest]\nmemory = 32M\n" NODE1,
		   "2: [guest] memory: 32 MiB is below the minimum of 64 MiB");
	load_fails("[node n1]\nmemory = 16M\ncontrol = /a\n[node n2]\nmemory = 16M\ncontrol = /b\n",
		   "guest memory defaults to the sum of node memory, 32 MiB, which is below the "
		   "minimum of 64 MiB; set [node NAME] memory or [guest] memory");
	cr_assert_eq(load("[guest]\nmemory = 64M\n[node n1]\ncontrol = /a\n"), 0, "%s", err);
	cr_assert_eq(hk_config_guest_memory(&cfg), 64ull << 20);
}

NODE_TEST(config, cluster_values)
{
	load_fails("[cluster]\nname = has space\n" NODE1,
		   "2: [cluster] name: bad name 'has space' (1-63 of A-Z a-z 0-9 . _ -)");
	load_fails("[cluster]\nprovider =\n" NODE1,
		   "2: [cluster] provider: empty (default is tcp;ofi_rxm)");
	load_fails("[cluster]\npolicy = sometimes\n" NODE1,
		   "2: [cluster] policy: 'sometimes': want page, vcpu or adaptive");
	load_fails("[cluster]\nname = a\n[cluster]\nname = b\n" NODE1,
		   "3: section [cluster] repeated (first at line 1)");
	load_fails("[guest]\nkernel =\n" NODE1, "2: [guest] kernel: empty path");
}

NODE_TEST(config, overlong_line_is_refused_not_split)
{
	static char text[20000];
	char *p = text;

	p += sprintf(p, "[guest]\ncmdline = ");
	memset(p, 'c', 10000);
	p += 10000;
	sprintf(p, "\n" NODE1);
	load_fails_with(text, ":2: line is longer than");
}

NODE_TEST(config, first_error_wins_and_err_may_be_small)
{
	char small[16];
	char tmpl[] = "/tmp/hk-conf-XXXXXX";
	const char *text = "[guest]\nvcpus = 0\nmemory = abc\n";
	int fd = mkstemp(tmpl);

	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	cr_assert_eq(hk_config_load(tmpl, &cfg, small, sizeof(small)), -EINVAL);
	cr_assert_eq(strlen(small), sizeof(small) - 1);
	cr_assert_eq(hk_config_load(tmpl, &cfg, NULL, 0), -EINVAL);
	unlink(tmpl);

	load_fails(text, "2: [guest] vcpus: '0' is out of range 1..64");
}

/* ---- [disk NAME] and [guest] replicas ------------------------------------ */

#define DISK0 "[disk d0]\npath = /tmp/d0.img\nsize = 1G\n"

NODE_TEST(config, two_disks_on_two_nodes)
{
	int ret = load("[guest]\n"
		       "replicas = off\n"
		       "[node n1]\n"
		       "memory = 1G\n"
		       "control = /run/hk/n1.sock\n"
		       "[node n2]\n"
		       "memory = 1G\n"
		       "control = /run/hk/n2.sock\n"
		       "[disk root]\n"
		       "path = /var/lib/hk/root.img\n"
		       "size = 4G\n"
		       "node = n1\n"
		       "queue_depth = 128\n"
		       "direct = on\n"
		       "[disk data.1]\n"
		       "path = /dev/nvme0n1\n"
		       "size = 1.5T\n"
		       "node = n2\n"
		       "queue_depth = 4096\n"
		       "direct = off\n");

	cr_assert_eq(ret, 0, "%s", err);
	cr_assert_not(cfg.replicas);
	cr_assert_eq(cfg.n_disks, 2);
	cr_assert_str_eq(cfg.disks[0].name, "root");
	cr_assert_str_eq(cfg.disks[0].path, "/var/lib/hk/root.img");
	cr_assert_eq(cfg.disks[0].size, 4ull << 30);
	cr_assert_str_eq(cfg.disks[0].node, "n1");
	cr_assert_eq(cfg.disks[0].queue_depth, 128);
	cr_assert_eq(cfg.disks[0].direct, HK_DIRECT_ON);
	cr_assert_str_eq(cfg.disks[1].name, "data.1");
	cr_assert_str_eq(cfg.disks[1].path, "/dev/nvme0n1");
	cr_assert_eq(cfg.disks[1].size, 3ull << 39);
	cr_assert_str_eq(cfg.disks[1].node, "n2");
	cr_assert_eq(cfg.disks[1].queue_depth, 4096);
	cr_assert_eq(cfg.disks[1].direct, HK_DIRECT_OFF);
	cr_assert_eq(hk_config_disk(&cfg, "data.1"), &cfg.disks[1]);
	cr_assert_eq(hk_config_disk(&cfg, "root"), &cfg.disks[0]);
	cr_assert_null(hk_config_disk(&cfg, "data"));
	/* The guest memory default is unchanged by disks. */
	cr_assert_eq(hk_config_guest_memory(&cfg), 2ull << 30);
}

NODE_TEST(config, disk_defaults)
{
	/* The disk comes before any node: its default is still the first
	 * [node] of the file, not whatever follows it. */
	int ret = load("[disk d0]\npath = /tmp/d0.img\nsize = 4K\n"
		       "[node first]\nmemory = 1G\ncontrol = /tmp/a.sock\n"
		       "[node second]\nmemory = 1G\ncontrol = /tmp/b.sock\n");

	cr_assert_eq(ret, 0, "%s", err);
	cr_assert(cfg.replicas);
	cr_assert_eq(cfg.n_disks, 1);
	cr_assert_str_eq(cfg.disks[0].name, "d0");
	cr_assert_eq(cfg.disks[0].size, 4096);
	cr_assert_str_eq(cfg.disks[0].node, "first");
	cr_assert_eq(cfg.disks[0].queue_depth, 64);
	cr_assert_eq(cfg.disks[0].direct, HK_DIRECT_AUTO);
}

NODE_TEST(config, disk_node_may_be_defined_later)
{
	int ret = load("[disk d0]\npath = /tmp/d0.img\nsize = 1G\nnode = n2\n" NODE1
		       "[node n2]\ncontrol = /tmp/n2.sock\n");

	cr_assert_eq(ret, 0, "%s", err);
	cr_assert_str_eq(cfg.disks[0].node, "n2");
}

NODE_TEST(config, disk_node_must_exist)
{
	/* Reported at the line of the node key, after the whole file is read. */
	load_fails(NODE1 "[disk d0]\npath = /tmp/d0.img\n\nnode = n9\nsize = 1G\n",
		   "7: [disk d0] node: no [node n9] in this file");
	load_fails("[disk d0]\nnode = N1\npath = /a\nsize = 1G\n" NODE1,
		   "2: [disk d0] node: no [node N1] in this file");
	load_fails(NODE1 DISK0 "node = n/1\n",
		   "7: [disk d0] node: bad node name 'n/1' (1-63 of A-Z a-z 0-9 . _ -)");
	load_fails(NODE1 DISK0 "node =\n",
		   "7: [disk d0] node: bad node name '' (1-63 of A-Z a-z 0-9 . _ -)");
	/* A file error (no nodes at all) comes before disk checks. */
	load_fails(DISK0, "no [node NAME] section; at least one node is required");
}

NODE_TEST(config, disk_size)
{
	load_fails(NODE1 "[disk d0]\npath = /a\nsize = lots\n",
		   "6: [disk d0] size: bad size 'lots'");
	load_fails(NODE1 "[disk d0]\npath = /a\nsize =\n", "6: [disk d0] size: bad size ''");
	load_fails(NODE1 "[disk d0]\npath = /a\nsize = -4K\n", "6: [disk d0] size: bad size '-4K'");
	load_fails(NODE1 "[disk d0]\npath = /a\nsize = 99999999999T\n",
		   "6: [disk d0] size: size '99999999999T' is too large");
	load_fails(
	    NODE1 "[disk d0]\npath = /a\nsize = 1000\n",
	    "6: [disk d0] size: 1000 (1000 bytes) is not a multiple of the 4 KiB block size");
	load_fails(NODE1 "[disk d0]\npath = /a\nsize = 6K\n",
		   "6: [disk d0] size: 6K (6144 bytes) is not a multiple of the 4 KiB block size");
	load_fails(NODE1 "[disk d0]\npath = /a\nsize = 0\n",
		   "6: [disk d0] size: 0 is below the minimum of 4 KiB");
	load_fails(NODE1 "[disk d0]\npath = /a\nsize = 0G\n",
		   "6: [disk d0] size: 0G is below the minimum of 4 KiB");
	load_fails(NODE1 "[disk d0]\npath = /a\nsize = 2P\n",
		   "6: [disk d0] size: 2P (2251799813685248 bytes) is above the maximum of 1 PiB");
	/* One block over (it would print as "1 PiB", hence the bytes). */
	load_fails(NODE1 "[disk d0]\npath = /a\nsize = 1125899906846720\n",
		   "6: [disk d0] size: 1125899906846720 (1125899906846720 bytes) is above the "
		   "maximum of 1 PiB");
	load_fails(NODE1 DISK0 "size = 2G\n", "7: [disk d0] size: set twice (first at line 6)");

	cr_assert_eq(load(NODE1 "[disk d0]\npath = /a\nsize = 1P\n"), 0, "%s", err);
	cr_assert_eq(cfg.disks[0].size, 1ull << 50);
	cr_assert_eq(load(NODE1 "[disk d0]\npath = /a\nsize = 1.5 GiB\n"), 0, "%s", err);
	cr_assert_eq(cfg.disks[0].size, 3ull << 29);
}

NODE_TEST(config, disk_queue_depth)
{
	load_fails(NODE1 DISK0 "queue_depth = 0\n",
		   "7: [disk d0] queue_depth: '0' is out of range 1..4096");
	load_fails(NODE1 DISK0 "queue_depth = 4097\n",
		   "7: [disk d0] queue_depth: '4097' is out of range 1..4096");
	load_fails(NODE1 DISK0 "queue_depth = 99999999999999999999999\n",
		   "7: [disk d0] queue_depth: '99999999999999999999999' is out of range 1..4096");
	load_fails(NODE1 DISK0 "queue_depth = -1\n", "7: [disk d0] queue_depth: bad number '-1'");
	load_fails(NODE1 DISK0 "queue_depth = 64k\n", "7: [disk d0] queue_depth: bad number '64k'");
	load_fails(NODE1 DISK0 "queue_depth =\n", "7: [disk d0] queue_depth: bad number ''");

	cr_assert_eq(load(NODE1 DISK0 "queue_depth = 1\n"), 0, "%s", err);
	cr_assert_eq(cfg.disks[0].queue_depth, 1);
	cr_assert_eq(load(NODE1 DISK0 "queue_depth = 4096\n"), 0, "%s", err);
	cr_assert_eq(cfg.disks[0].queue_depth, 4096);
}

NODE_TEST(config, disk_direct)
{
	static const struct {
		const char *text;
		enum hk_disk_direct_conf want;
	} good[] = {
	    {"auto", HK_DIRECT_AUTO}, {"AUTO", HK_DIRECT_AUTO}, {"on", HK_DIRECT_ON},
	    {"yes", HK_DIRECT_ON},    {"1", HK_DIRECT_ON},	{"off", HK_DIRECT_OFF},
	    {"Off", HK_DIRECT_OFF},   {"false", HK_DIRECT_OFF}, {"0", HK_DIRECT_OFF},
	};
	char text[256];
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(text, sizeof(text), NODE1 DISK0 "direct = %s\n", good[i].text);
		cr_assert_eq(load(text), 0, "direct = %s: %s", good[i].text, err);
		cr_assert_eq(cfg.disks[0].direct, good[i].want, "direct = %s", good[i].text);
	}
	load_fails(NODE1 DISK0 "direct = maybe\n",
		   "7: [disk d0] direct: bad value 'maybe' (want auto, on or off)");
	load_fails(NODE1 DISK0 "direct =\n",
		   "7: [disk d0] direct: bad value '' (want auto, on or off)");
	load_fails(NODE1 DISK0 "direct = o_direct\n",
		   "7: [disk d0] direct: bad value 'o_direct' (want auto, on or off)");
}

NODE_TEST(config, guest_replicas)
{
	static const char *const on[] = {"on", "true", "yes", "1", "ON", "True"};
	static const char *const off[] = {"off", "false", "no", "0", "OFF", "No"};
	char text[256];
	size_t i;

	for (i = 0; i < sizeof(on) / sizeof(on[0]); i++) {
		snprintf(text, sizeof(text), "[guest]\nreplicas = %s\n" NODE1, on[i]);
		cr_assert_eq(load(text), 0, "replicas = %s: %s", on[i], err);
		cr_assert(cfg.replicas, "replicas = %s", on[i]);
		snprintf(text, sizeof(text), "[guest]\nreplicas = %s\n" NODE1, off[i]);
		cr_assert_eq(load(text), 0, "replicas = %s: %s", off[i], err);
		cr_assert_not(cfg.replicas, "replicas = %s", off[i]);
	}
	load_fails("[guest]\nreplicas = 2\n" NODE1,
		   "2: [guest] replicas: bad value '2' (want on or off)");
	load_fails("[guest]\nreplicas = auto\n" NODE1,
		   "2: [guest] replicas: bad value 'auto' (want on or off)");
	load_fails("[guest]\nreplicas =\n" NODE1,
		   "2: [guest] replicas: bad value '' (want on or off)");
	load_fails("[guest]\nreplicas = on\nreplicas = off\n" NODE1,
		   "3: [guest] replicas: set twice (first at line 2)");
}

NODE_TEST(config, disk_sections)
{
	load_fails(NODE1 "[disk]\npath = /a\nsize = 1G\n",
		   "4: bad disk name '' in [disk NAME] (1-63 of A-Z a-z 0-9 . _ -)");
	load_fails(NODE1 "[disk a b]\npath = /a\nsize = 1G\n",
		   "4: bad disk name 'a b' in [disk NAME] (1-63 of A-Z a-z 0-9 . _ -)");
	load_fails(NODE1 "[disk -d]\npath = /a\nsize = 1G\n",
		   "4: bad disk name '-d' in [disk NAME] (1-63 of A-Z a-z 0-9 . _ -)");
	load_fails(NODE1 DISK0 "[disk d0]\npath = /b\nsize = 1G\n",
		   "7: duplicate [disk d0] (first at line 4)");
	/* A disk may share its name with a node. */
	cr_assert_eq(load(NODE1 "[disk n1]\npath = /a\nsize = 1G\n"), 0, "%s", err);
	cr_assert_str_eq(cfg.disks[0].name, "n1");

	load_fails(NODE1 "[disk d0]\nsize = 1G\n",
		   "4: [disk d0] path: missing (the disk's image file or block device)");
	load_fails(NODE1 "\n[disk d0]\n",
		   "5: [disk d0] path: missing (the disk's image file or block device)");
	load_fails(NODE1 "[disk d0]\npath = /a\nqueue_depth = 8\n",
		   "4: [disk d0] size: missing (bytes the guest sees, a multiple of 4 KiB)");
	load_fails(NODE1 "[disk d0]\npath =\nsize = 1G\n", "5: [disk d0] path: empty path");
	load_fails(NODE1 DISK0 "path = /b\n", "7: [disk d0] path: set twice (first at line 5)");
	load_fails(NODE1 DISK0 "sise = 1G\n", "7: [disk d0] unknown key 'sise'");
	load_fails(NODE1 DISK0 "memory = 1G\n", "7: [disk d0] unknown key 'memory'");
	load_fails(NODE1 "[guest]\nqueue_depth = 8\n", "5: [guest] unknown key 'queue_depth'");
	load_fails(NODE1 "path = /a\n", "4: [node n1] unknown key 'path'");

	/* The first error in the file wins over one found at the end. */
	load_fails(NODE1 "[disk d0]\n[disk d1]\npath = /a\nsize = 1G\nnode = n9\ndirect = x\n",
		   "9: [disk d1] direct: bad value 'x' (want auto, on or off)");
}

NODE_TEST(config, disk_paths_must_differ)
{
	static char text[3 * PATH_MAX];
	char dir[] = "/tmp/hk-conf-dir-XXXXXX";
	char real[PATH_MAX], path[PATH_MAX + 16];
	FILE *f;
	int ret;

	load_fails_with(NODE1 DISK0 "[disk d1]\npath = /tmp/d0.img\nsize = 1G\n",
			":8: [disk d1] path: '/tmp/d0.img' is already used by [disk d0]");

	/* The same file spelt relative and absolute is the same path. */
	cr_assert_not_null(mkdtemp(dir));
	cr_assert_not_null(realpath(dir, real));
	snprintf(path, sizeof(path), "%s/hk.conf", dir);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	snprintf(text, sizeof(text),
		 NODE1 "[disk d0]\npath = ./d.img\nsize = 1G\n[disk d1]\npath = %s/d.img\n"
		       "size = 1G\n",
		 real);
	fputs(text, f);
	fclose(f);
	ret = hk_config_load(path, &cfg, err, sizeof(err));
	unlink(path);
	rmdir(dir);
	cr_assert_eq(ret, -EINVAL);
	snprintf(text, sizeof(text),
		 "%s:8: [disk d1] path: '%s/d.img' is already used by [disk d0]", path, real);
	cr_assert_str_eq(err, text);
}

NODE_TEST(config, too_many_disks)
{
	char text[4096];
	size_t off = 0;
	int i;

	off += (size_t)snprintf(text + off, sizeof(text) - off, NODE1);
	for (i = 0; i < HK_MAX_DISKS; i++)
		off += (size_t)snprintf(text + off, sizeof(text) - off,
					"[disk d%d]\npath = /tmp/d%d.img\nsize = 1G\n", i, i);
	cr_assert_eq(load(text), 0, "%s", err);
	cr_assert_eq(cfg.n_disks, HK_MAX_DISKS);
	cr_assert_str_eq(cfg.disks[HK_MAX_DISKS - 1].name, "d7");

	snprintf(text + off, sizeof(text) - off, "[disk d8]\npath = /tmp/d8.img\nsize = 1G\n");
	load_fails(text, "28: [disk d8]: more than 8 disks");
}

NODE_TEST(config, relative_disk_paths_are_from_the_files_folder)
{
	char dir[] = "/tmp/hk-conf-dir-XXXXXX";
	char real[PATH_MAX], path[PATH_MAX + 16], want[PATH_MAX + 32];
	FILE *f;
	int ret;

	cr_assert_not_null(mkdtemp(dir));
	cr_assert_not_null(realpath(dir, real));
	snprintf(path, sizeof(path), "%s/hk.conf", dir);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(NODE1 "[disk d0]\npath = d0.img\nsize = 1G\n"
		    "[disk d1]\npath = ./img/d1.img\nsize = 1G\n"
		    "[disk d2]\npath = /dev/vdb\nsize = 1G\n",
	      f);
	fclose(f);

	/* Loaded by a relative name from the folder, used from elsewhere. */
	cr_assert_eq(chdir(dir), 0);
	ret = hk_config_load("hk.conf", &cfg, err, sizeof(err));
	cr_assert_eq(chdir("/"), 0);
	unlink(path);
	rmdir(dir);

	cr_assert_eq(ret, 0, "%s", err);
	snprintf(want, sizeof(want), "%s/d0.img", real);
	cr_assert_str_eq(cfg.disks[0].path, want);
	snprintf(want, sizeof(want), "%s/img/d1.img", real);
	cr_assert_str_eq(cfg.disks[1].path, want);
	cr_assert_str_eq(cfg.disks[2].path, "/dev/vdb");
}

NODE_TEST(config, long_disk_path)
{
	static char text[8192];
	char longp[4200];

	memset(longp, 'p', sizeof(longp) - 1);
	longp[0] = '/';
	longp[sizeof(longp) - 1] = '\0';
	snprintf(text, sizeof(text), NODE1 "[disk d0]\nsize = 1G\npath = %s\n", longp);
	load_fails_with(text, ":6: [disk d0] path: path '/ppp");
	load_fails_with(text, "...' is 4199 bytes, the limit is 4095");

	longp[4095] = '\0';
	snprintf(text, sizeof(text), NODE1 "[disk d0]\nsize = 1G\npath = %s\n", longp);
	cr_assert_eq(load(text), 0, "%s", err);
	cr_assert_str_eq(cfg.disks[0].path, longp);
}

NODE_TEST(config, policy_values)
{
	static const struct {
		const char *text;
		enum hk_policy want;
	} cases[] = {{"page", HK_POLICY_PAGE}, {"vcpu", HK_POLICY_VCPU},
		     {"adaptive", HK_POLICY_ADAPTIVE}};

	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[256];

		snprintf(text, sizeof(text), "[cluster]\npolicy = %s\n" NODE1, cases[i].text);
		cr_assert_eq(load(text), 0, "%s", err);
		cr_assert_eq(cfg.policy, cases[i].want, "policy = %s", cases[i].text);
	}
}
