/*
 * Human sizes: "512", "64K", "256MiB", "1.5G" <-> bytes.
 *
 * Multiples are binary (K = 1024) whatever the spelling: "K", "KB" and
 * "KiB" all mean 1024, because every size in hk.conf is memory.  A decimal
 * fraction is accepted only when it names a whole number of bytes
 * ("1.5G" = 1610612736, "0.5K" = 512); "0.1K" is 102.4 bytes and is
 * refused with -EINVAL rather than rounded, so a config never means
 * something other than what it says.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "node.h"

static const char size_units[] = "KMGTPE";

/* Decimal digits kept from a fraction; more cannot change a whole-byte result
 * below 2^64 and would overflow the 10^n divisor. */
#define SIZE_FRAC_DIGITS_MAX 18

static int size_digit(char c)
{
	return c >= '0' && c <= '9';
}

static char size_upper(char c)
{
	return (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
}

/* Parse the unit after the number: "", "B", "K", "KB", "KiB" ...; spaces
 * between the number and the unit are allowed so "1.5 GiB" round-trips. */
static int size_parse_unit(const char *p, unsigned *shift)
{
	const char *u;

	while (*p == ' ')
		p++;
	*shift = 0;
	if (*p == '\0')
		return 0;
	if (size_upper(*p) == 'B')
		return p[1] == '\0' ? 0 : -EINVAL;
	u = strchr(size_units, size_upper(*p));
	if (!u)
		return -EINVAL;
	*shift = 10 * (unsigned)(u - size_units + 1);
	p++;
	if (*p == 'i' || *p == 'I') {
		p++;
		if (size_upper(*p) != 'B')
			return -EINVAL;
	}
	if (size_upper(*p) == 'B')
		p++;
	return *p == '\0' ? 0 : -EINVAL;
}

int hk_parse_size(const char *s, uint64_t *out)
{
	uint64_t whole = 0, frac = 0, pow10 = 1;
	unsigned frac_digits = 0, shift;
	unsigned __int128 total, fbytes;
	const char *p = s;
	int ret;

	if (!s || !size_digit(*p))
		return -EINVAL; /* empty, sign, leading space, ".5" */
	for (; size_digit(*p); p++) {
		if (__builtin_mul_overflow(whole, 10, &whole) ||
		    __builtin_add_overflow(whole, (uint64_t)(*p - '0'), &whole))
			return -ERANGE;
	}
	if (*p == '.') {
		p++;
		if (!size_digit(*p))
			return -EINVAL; /* "1." or "1.G" */
		for (; size_digit(*p); p++) {
			if (frac_digits == SIZE_FRAC_DIGITS_MAX) {
				if (*p != '0')
					return -EINVAL; /* cannot be whole bytes */
				continue;
			}
			frac = frac * 10 + (uint64_t)(*p - '0');
			pow10 *= 10;
			frac_digits++;
		}
	}
	ret = size_parse_unit(p, &shift);
	if (ret)
		return ret;

	total = (unsigned __int128)whole << shift;
	fbytes = (unsigned __int128)frac << shift;
	if (fbytes % pow10)
		return -EINVAL; /* fraction of a byte */
	total += fbytes / pow10;
	if (total > UINT64_MAX)
		return -ERANGE;
	*out = (uint64_t)total;
	return 0;
}

/*
 * Largest unit that keeps the value >= 1, two decimals at most, trailing
 * zeros dropped: "512 B", "64 MiB", "1.5 GiB", "1.33 GiB".
 */
const char *hk_format_size(uint64_t bytes, char *buf, size_t len)
{
	static const char *const names[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	unsigned unit = 0;
	uint64_t hundredths, ip, fp;

	if (!buf || len == 0)
		return buf;
	while (unit + 1 < sizeof(names) / sizeof(names[0]) && bytes >> (10 * (unit + 1)))
		unit++;
	/* Round to hundredths of the unit; 1023.999 MiB becomes "1 GiB", not
	 * "1024 MiB". */
	for (;;) {
		unsigned __int128 div = (unsigned __int128)1 << (10 * unit);

		hundredths = (uint64_t)(((unsigned __int128)bytes * 100 + div / 2) / div);
		if (hundredths < 1024 * 100 || unit + 1 == sizeof(names) / sizeof(names[0]))
			break;
		unit++;
	}
	ip = hundredths / 100;
	fp = hundredths % 100;
	if (unit == 0 || fp == 0)
		snprintf(buf, len, "%llu %s", (unsigned long long)ip, names[unit]);
	else if (fp % 10 == 0)
		snprintf(buf, len, "%llu.%llu %s", (unsigned long long)ip,
			 (unsigned long long)(fp / 10), names[unit]);
	else
		snprintf(buf, len, "%llu.%02llu %s", (unsigned long long)ip, (unsigned long long)fp,
			 names[unit]);
	return buf;
}
