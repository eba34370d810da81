/*
 * Command line: "WORKLOAD [key=value ...] [guestos.sipi=N] [hk.vcpus=N]
 * [virtio_mmio.device=SIZE@BASE:IRQ ...]".
 * Words are split on blanks. hk.* words belong to hyperkernel (it appends
 * hk.vcpus=N, see docs/boot-abi.md); guestos.* words configure guestos
 * itself; virtio_mmio.device= words name virtio-mmio windows in Linux's
 * syntax (hyperkernel appends one per disk, QEMU microvm one per device).
 * All are taken out of argv here, so workloads only see their own
 * arguments. Unknown hk.* words are ignored for forward compatibility with
 * later hyperkernel extensions; unknown guestos.* and virtio_mmio.* words
 * are errors.
 */
#include "guestos.h"

static char words[4096]; /* tokenised copy; argv points into it */

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

const char *cmdline_value(const char *arg, const char *key)
{
	size_t n = strlen(key);

	if (strncmp(arg, key, n) != 0 || arg[n] != '=')
		return NULL;
	return arg + n + 1;
}

int parse_u64(const char *s, uint64_t *out)
{
	unsigned base = 10;
	uint64_t v = 0;

	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	if (!*s)
		return -1;
	for (; *s; s++) {
		unsigned d;

		if (*s >= '0' && *s <= '9')
			d = (unsigned)(*s - '0');
		else if (base == 16 && *s >= 'a' && *s <= 'f')
			d = (unsigned)(*s - 'a' + 10);
		else if (base == 16 && *s >= 'A' && *s <= 'F')
			d = (unsigned)(*s - 'A' + 10);
		else
			return -1;
		if (v > (UINT64_MAX - d) / base)
			return -1;
		v = v * base + d;
	}
	*out = v;
	return 0;
}

/* A byte count with an optional binary suffix: 4096, 64K, 512M, 3G, 1T. */
int parse_size(const char *s, uint64_t *out)
{
	char num[32];
	size_t n = strlen(s);
	unsigned shift = 0;
	uint64_t v;

	if (n == 0 || n >= sizeof(num))
		return -1;
	switch (s[n - 1]) {
	case 'k':
	case 'K':
		shift = 10;
		break;
	case 'm':
	case 'M':
		shift = 20;
		break;
	case 'g':
	case 'G':
		shift = 30;
		break;
	case 't':
	case 'T':
		shift = 40;
		break;
	default:
		break;
	}
	memcpy(num, s, n + 1);
	if (shift)
		num[n - 1] = '\0';
	if (parse_u64(num, &v) < 0 || v > (UINT64_MAX >> shift))
		return -1;
	*out = v << shift;
	return 0;
}

/* A vCPU count in 1..GUESTOS_MAX_VCPUS, or -1 after saying why not. */
static int parse_vcpus(const char *w, const char *v, unsigned *out)
{
	uint64_t n;

	if (parse_u64(v, &n) < 0 || n < 1 || n > GUESTOS_MAX_VCPUS) {
		printk("guestos: bad %s (1 to %d vCPUs)\n", w, GUESTOS_MAX_VCPUS);
		return -1;
	}
	*out = (unsigned)n;
	return 0;
}

static int take_hk_word(struct cmdline *cl, const char *w)
{
	const char *v = cmdline_value(w, "hk.vcpus");

	return v ? parse_vcpus(w, v, &cl->vcpus) : 0;
}

static int take_guestos_word(struct cmdline *cl, const char *w)
{
	const char *v = cmdline_value(w, "guestos.sipi");

	if (!v) {
		printk("guestos: unknown option '%s' (guestos.sipi=N)\n", w);
		return -1;
	}
	return parse_vcpus(w, v, &cl->sipi);
}

/*
 * virtio_mmio.device=<size>@<base>:<irq>[:<id>], as Linux's virtio_mmio
 * driver takes it: size with an optional K/M suffix, base and irq in
 * decimal or 0x hex. The window must lie in what boot.S maps and hold the
 * registers and a device configuration (0x100 + config: 512 bytes at least).
 */
static int take_virtio_word(struct cmdline *cl, const char *w)
{
	const char *v = cmdline_value(w, "virtio_mmio.device");
	char buf[64], *at, *colon, *id;
	struct virtio_mmio_window win;
	uint64_t irq, unused;
	size_t n;

	if (!v) {
		printk("guestos: unknown option '%s' (virtio_mmio.device=SIZE@BASE:IRQ)\n", w);
		return -1;
	}
	n = strlen(v);
	if (n >= sizeof(buf))
		goto bad;
	memcpy(buf, v, n + 1);
	at = buf;
	while (*at && *at != '@')
		at++;
	colon = at;
	while (*colon && *colon != ':')
		colon++;
	if (!*at || !*colon)
		goto bad;
	*at++ = '\0';
	*colon++ = '\0';
	for (id = colon; *id && *id != ':'; id++)
		;
	if (*id) {
		*id++ = '\0';
		if (parse_u64(id, &unused) < 0)
			goto bad;
	}
	if (parse_size(buf, &win.size) < 0 || parse_u64(at, &win.base) < 0 ||
	    parse_u64(colon, &irq) < 0 || irq > UINT32_MAX)
		goto bad;
	win.irq = (uint32_t)irq;
	if (win.size < 512 || win.base % 4 || win.base >= GUESTOS_MAPPED_LIMIT ||
	    win.size > GUESTOS_MAPPED_LIMIT - win.base)
		goto bad;
	if (cl->nr_virtio == VIRTIO_MMIO_MAX) {
		printk("guestos: more than %d virtio_mmio.device words\n", VIRTIO_MMIO_MAX);
		return -1;
	}
	cl->virtio[cl->nr_virtio++] = win;
	return 0;
bad:
	printk("guestos: bad '%s' (virtio_mmio.device=SIZE@BASE:IRQ, a window of 512 bytes "
	       "or more below 64 GiB)\n",
	       w);
	return -1;
}

int cmdline_parse(struct cmdline *cl, const char *text)
{
	size_t len = strlen(text);
	char *p = words;

	if (len >= sizeof(words))
		len = sizeof(words) - 1;
	memcpy(words, text, len);
	words[len] = '\0';
	cl->argc = 0;
	cl->vcpus = 0;
	cl->sipi = 0;
	cl->nr_virtio = 0;

	for (;;) {
		char *w;

		while (is_blank(*p))
			p++;
		if (!*p)
			return 0;
		w = p;
		while (*p && !is_blank(*p))
			p++;
		if (*p)
			*p++ = '\0';
		if (strncmp(w, "hk.", 3) == 0) {
			if (take_hk_word(cl, w) < 0)
				return -1;
			continue;
		}
		if (strncmp(w, "guestos.", 8) == 0) {
			if (take_guestos_word(cl, w) < 0)
				return -1;
			continue;
		}
		if (strncmp(w, "virtio_mmio.", 12) == 0) {
			if (take_virtio_word(cl, w) < 0)
				return -1;
			continue;
		}
		if (cl->argc == CMDLINE_MAX_ARGS) {
			printk("guestos: more than %d words on the command line\n",
			       CMDLINE_MAX_ARGS);
			return -1;
		}
		cl->argv[cl->argc++] = w;
	}
}
